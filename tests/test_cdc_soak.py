"""Soak: a writer changes 3 source tables while `headwater up` is SIGKILLed at random
moments (the snapshot included); afterwards every replica equals its source table."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from headwater.storage.embedded import EmbeddedPostgres

from .conftest import new_database, query
from .mariadb_server import MariaDB
from .mariadb_server import mariadb_server as mariadb_server

TABLES = ("t_a", "t_b", "t_c")
CHANGES = 100_000
KILLS = 20
INITIAL_ROWS = 20_000  # per table before the first start: kills land in the snapshot


class Writer(threading.Thread):
    """Random inserts, updates and deletes, 1-5 rows per transaction."""

    def __init__(self, execute_tx: Callable[[list[tuple[str, tuple[Any, ...]]]], None]) -> None:
        super().__init__(daemon=True)
        self.execute_tx = execute_tx
        self.rng = random.Random(11)
        self.next_id = {t: INITIAL_ROWS for t in TABLES}
        self.live: dict[str, list[int]] = {t: list(range(INITIAL_ROWS)) for t in TABLES}
        self.done = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while self.done < CHANGES:
                stmts = [self._change() for _ in range(self.rng.randint(1, 5))]
                self.execute_tx(stmts)
                self.done += len(stmts)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def _change(self) -> tuple[str, tuple[Any, ...]]:
        t = self.rng.choice(TABLES)
        live = self.live[t]
        r = self.rng.random()
        if r < 0.4 or len(live) < 100:
            i = self.next_id[t]
            self.next_id[t] += 1
            live.append(i)
            return (
                f"INSERT INTO {t} (id, name, qty, note) VALUES (%s, %s, %s, %s)",
                (
                    i,
                    f"n{i}",
                    self.rng.randint(0, 1000),
                    None if self.rng.random() < 0.3 else "x" * self.rng.randint(1, 40),
                ),
            )
        j = self.rng.randrange(len(live))
        if r < 0.85:
            return (
                f"UPDATE {t} SET qty = qty + 1, name = %s WHERE id = %s",
                (f"u{self.rng.randint(0, 99)}", live[j]),
            )
        live[j], live[-1] = live[-1], live[j]
        return (f"DELETE FROM {t} WHERE id = %s", (live.pop(),))


def _up(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "headwater", "up", "--no-server", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _crash(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # up, its sources and workers: all at once
    proc.wait()


def soak(
    cfg: Path,
    dsn: str,
    source_rows: Callable[[str], dict[int, tuple[Any, ...]]],
    writer: Writer,
    source: str,
) -> None:
    rng = random.Random(5)
    writer_started = False
    for k in range(KILLS):
        proc = _up(cfg)
        if k == 2:
            writer.start()  # the first kills hit the snapshot; then changes stream in
            writer_started = True
        time.sleep(rng.uniform(0.5, 2.5))
        _crash(proc)
    if not writer_started:
        writer.start()
    writer.join(300)
    assert writer.error is None, writer.error
    proc = _up(cfg)
    try:
        deadline = time.monotonic() + 300
        for t in TABLES:
            want = source_rows(t)
            while True:
                got = _replica_rows(dsn, f"{source}.{t}")
                if got == want:
                    break
                assert proc.poll() is None, "headwater up died"
                if time.monotonic() > deadline:
                    missing = len(set(want) - set(got))
                    extra = len(set(got) - set(want))
                    differ = sum(1 for i in set(want) & set(got) if want[i] != got[i])
                    pytest.fail(f"{t}: {missing} missing, {extra} extra, {differ} differ")
                time.sleep(0.5)
        _wait_for_workers(dsn, proc)  # caught up before it started: stop a running up
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0
    left = subprocess.run(["pgrep", "-f", str(cfg)], capture_output=True, text=True)
    assert left.stdout == "", f"processes left behind: {left.stdout}"


def _wait_for_workers(dsn: str, proc: subprocess.Popen[bytes]) -> None:
    """Until ``up`` runs its workers (a SIGTERM while Python still starts is the default
    action, not the graceful stop under test)."""
    deadline = time.monotonic() + 60
    while not query(
        dsn,
        "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'headwater-worker:%%'",
    ):
        assert proc.poll() is None, "headwater up died"
        assert time.monotonic() < deadline, "headwater up started no worker in 60 s"
        time.sleep(0.2)


def _replica_rows(dsn: str, table: str) -> dict[int, tuple[Any, ...]]:
    if not query(dsn, "SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0]:
        return {}
    rows = query(dsn, f"SELECT id, name, qty, note FROM {table}")
    return {r[0]: tuple(r) for r in rows}


def _config(tmp_path: Path, dsn: str, source_block: str) -> Path:
    cfg = tmp_path / "headwater.toml"
    cfg.write_text(
        f'[storage]\npostgres = "{dsn}"\n[worker]\nbatch_max_events = 2000\nbatch_max_ms = 20\n'
        f"{source_block}"
    )
    return cfg


@pytest.mark.slow
def test_postgres_source_soak_with_sigkills(
    tmp_path: Path, dsn: str, pg_server: EmbeddedPostgres
) -> None:
    src = new_database(pg_server, "soaksrc")
    with psycopg.connect(src, autocommit=True) as conn:
        for t in TABLES:
            conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, name text, qty int, note text)")
            conn.execute(
                f"INSERT INTO {t} SELECT g, 'n' || g, g % 1000, NULL"
                f" FROM generate_series(0, {INITIAL_ROWS - 1}) g"
            )
    cfg = _config(
        tmp_path,
        dsn,
        f'[[sources]]\nname = "crm"\nkind = "postgres"\ndsn = "{src}"\n'
        f"tables = {list(TABLES)!r}\n".replace("'", '"'),
    )
    wconn = psycopg.connect(src)

    def execute_tx(stmts: list[tuple[str, tuple[Any, ...]]]) -> None:
        with wconn.transaction():
            for q, params in stmts:
                wconn.execute(q, params)

    def source_rows(t: str) -> dict[int, tuple[Any, ...]]:
        return {r[0]: tuple(r) for r in query(src, f"SELECT id, name, qty, note FROM {t}")}

    try:
        soak(cfg, dsn, source_rows, Writer(execute_tx), "crm")
    finally:
        wconn.close()
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot('headwater_crm')")


@pytest.mark.slow
def test_mariadb_source_soak_with_sigkills(
    tmp_path: Path, dsn: str, mariadb_server: MariaDB
) -> None:
    db = "soak"
    mariadb_server.execute(f"DROP DATABASE IF EXISTS {db}", f"CREATE DATABASE {db}")
    for t in TABLES:
        mariadb_server.execute(
            f"CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(20), qty INT, note TEXT)",
            f"INSERT INTO {t} SELECT seq, CONCAT('n', seq), seq % 1000, NULL"
            f" FROM seq_0_to_{INITIAL_ROWS - 1}",
            database=db,
        )
    s = mariadb_server.settings
    cfg = _config(
        tmp_path,
        dsn,
        f'[[sources]]\nname = "loyalty"\nkind = "mysql"\n'
        f'dsn = "mysql://{s["user"]}:{s["password"]}@{s["host"]}:{s["port"]}"\n'
        f"tables = {[f'{db}.{t}' for t in TABLES]!r}\n".replace("'", '"'),
    )
    wconn = mariadb_server.connect(database=db, autocommit=False)

    def execute_tx(stmts: list[tuple[str, tuple[Any, ...]]]) -> None:
        with wconn.cursor() as cur:
            for q, params in stmts:
                cur.execute(q, params)
        wconn.commit()

    def source_rows(t: str) -> dict[int, tuple[Any, ...]]:
        rows = mariadb_server.execute(f"SELECT id, name, qty, note FROM {t}", database=db)
        return {r[0]: tuple(r) for r in rows}

    try:
        soak(cfg, dsn, source_rows, Writer(execute_tx), "loyalty")
    finally:
        wconn.close()
