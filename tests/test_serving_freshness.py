"""Read-your-writes (serving.freshness.wait_fresh) against real sources: a PostgreSQL
database captured by logical replication and a MariaDB captured from its binlog, each
replicated by a worker. After a write commits at the source, wait_fresh returns only
once the replica shows it; with the worker stopped it times out (stale)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from headwater.config.loader import load_settings
from headwater.config.model import Settings
from headwater.engine.runtime import Runtime, bootstrap
from headwater.serving.freshness import dependent_pipelines, wait_fresh
from headwater.storage.embedded import EmbeddedPostgres

from .conftest import ThreadedPipelines, new_database, query
from .mariadb_server import MariaDB
from .mariadb_server import mariadb_server as mariadb_server
from .test_cdc_postgres import _drop_slots, sql

pytestmark = pytest.mark.timeout(240)


@dataclass
class Running:
    settings: Settings
    rt: Runtime
    pipes: ThreadedPipelines

    def fresh(self, timeout_s: float) -> tuple[bool, float]:
        with psycopg.connect(self.rt.dsn, autocommit=True) as conn:
            fr = wait_fresh(
                self.settings,
                conn,
                self.rt.log,
                dependent_pipelines(self.settings),
                timeout_s=timeout_s,
                poll_s=0.02,
            )
        return fr.caught_up, fr.waited_ms

    def close(self) -> None:
        self.pipes.close()
        self.rt.close()


def _start(cfg: Path) -> Running:
    settings = load_settings(cfg)
    rt = bootstrap(settings, start=False)
    return Running(settings, rt, ThreadedPipelines(settings, rt))


@pytest.fixture
def pg_source(pg_server: EmbeddedPostgres) -> Iterator[str]:
    dsn = new_database(pg_server, "src")
    sql(dsn, "CREATE TABLE items (id int PRIMARY KEY, name text)")
    yield dsn
    _drop_slots(dsn)


def _replica_has(dsn: str, table: str, key: int, name: str) -> bool:
    try:
        return query(dsn, f"SELECT name FROM {table} WHERE id = %s", (key,)) == [(name,)]
    except psycopg.errors.UndefinedTable:
        return False


def test_fresh_waits_for_a_postgres_write_and_times_out_when_stalled(
    tmp_path: Path, dsn: str, pg_source: str
) -> None:
    cfg = tmp_path / "headwater.toml"
    cfg.write_text(
        f'[storage]\npostgres = "{dsn}"\n'
        f'[[sources]]\nkind = "postgres"\nname = "crm"\ndsn = "{pg_source}"\ntables = ["items"]\n'
    )
    run = _start(cfg)
    try:
        waits = []
        for i in range(1, 6):
            sql(pg_source, f"INSERT INTO items VALUES ({i}, 'v{i}')")
            ok, ms = run.fresh(20)
            assert ok and _replica_has(dsn, "crm.items", i, f"v{i}"), (i, ms)
            waits.append(ms)
        sql(pg_source, "UPDATE items SET name = 'edited' WHERE id = 3")
        ok, _ = run.fresh(20)
        assert ok and _replica_has(dsn, "crm.items", 3, "edited")
        ok, _ = run.fresh(20)  # nothing new: returns at once
        assert ok
        for w in run.pipes.workers:
            w.stop()
        time.sleep(0.5)
        sql(pg_source, "UPDATE items SET name = 'late' WHERE id = 3")
        ok, ms = run.fresh(1.0)
        assert not ok and ms >= 1000
        assert _replica_has(dsn, "crm.items", 3, "edited")
        print(f"postgres fresh waits (ms): {[round(w) for w in waits]}")
    finally:
        run.close()


def test_fresh_waits_for_a_mariadb_write(tmp_path: Path, dsn: str, mariadb_server: MariaDB) -> None:
    db = f"fresh_{int(time.time() * 1000) % 10_000_000}"
    mariadb_server.execute(
        f"CREATE DATABASE {db}", f"CREATE TABLE {db}.items (id int PRIMARY KEY, name text)"
    )
    s = mariadb_server.settings
    cfg = tmp_path / "headwater.toml"
    cfg.write_text(
        f'[storage]\npostgres = "{dsn}"\n'
        f'[[sources]]\nkind = "mysql"\nname = "shop"\n'
        f'dsn = "mysql://{s["user"]}:{s["password"]}@{s["host"]}:{s["port"]}"\n'
        f'tables = ["{db}.items"]\n'
    )
    run = _start(cfg)
    try:
        for i in range(1, 4):
            mariadb_server.execute(f"INSERT INTO {db}.items VALUES ({i}, 'v{i}')")
            ok, ms = run.fresh(20)
            assert ok and _replica_has(dsn, "shop.items", i, f"v{i}"), (i, ms)
        mariadb_server.execute(f"UPDATE {db}.items SET name = 'edited' WHERE id = 2")
        ok, _ = run.fresh(20)
        assert ok and _replica_has(dsn, "shop.items", 2, "edited")
    finally:
        run.close()
