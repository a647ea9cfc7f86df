"""Shared bench helpers: a throwaway embedded PostgreSQL and timing."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from headwater.storage.embedded import EmbeddedPostgres
from headwater.storage.schema import migrate


@contextlib.contextmanager
def embedded_database(name: str = "bench") -> Iterator[str]:
    """A migrated database on a fresh embedded server, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="hwbench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        pg.ensure_running()
        try:
            with psycopg.connect(pg.dsn(), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            dsn = pg.dsn(name)
            with psycopg.connect(dsn) as conn:
                migrate(conn)
            yield dsn
        finally:
            pg.stop()


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def row(name: str, rate: float, unit: str = "records/s", note: str = "") -> None:
    print(f"  {name:<48} {rate:>12,.0f} {unit}  {note}")
