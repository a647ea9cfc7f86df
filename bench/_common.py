"""Shared bench helpers: a throwaway embedded PostgreSQL and timing."""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from headwater.storage.embedded import EmbeddedPostgres
from headwater.storage.schema import migrate

# A bench stopped with SIGTERM (e.g. by `timeout`) still runs its clean-up: servers
# and brokers it started are stopped by the context managers below.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


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


def run_until(worker: Any, done: Callable[[], bool], timeout_s: float = 600) -> None:
    """Run ``worker`` in a thread (as in production) until ``done()``; then stop it."""
    import threading

    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("worker did not finish in time")
        time.sleep(0.01)
    worker.stop()
    t.join(30)


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def row(name: str, rate: float, unit: str = "records/s", note: str = "") -> None:
    print(f"  {name:<48} {rate:>12,.0f} {unit}  {note}")
