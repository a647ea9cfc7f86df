"""MySQL/MariaDB CDC source against a real MariaDB the tests start (``mariadb_server``)
and the postgres log in a fresh Headwater database per test."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from headwater.errors import SourceError
from headwater.log.postgres import PostgresLog
from headwater.sinks.replica import ReplicaSink
from headwater.sources.mysql import MySQLSettings, MySQLSource
from headwater.sources.mysql import state as mysql_state
from headwater.storage.embedded import EmbeddedPostgres

from .conftest import merge, new_database, query
from .mariadb_server import MariaDB, start_mariadb
from .mariadb_server import mariadb_server as mariadb_server

_db_counter = itertools.count()


class Env:
    """One test's world: a MariaDB database, a Headwater database and its log."""

    def __init__(self, server: MariaDB, dsn: str) -> None:
        self.server = server
        self.db = f"src_{next(_db_counter)}"
        self.dsn = dsn
        self.log = PostgresLog(dsn)
        server.execute(f"CREATE DATABASE {self.db}")
        self.sources: list[MySQLSource] = []

    def sql(self, *statements: str) -> list[Any]:
        return self.server.execute(*statements, database=self.db)

    def source(self, tables: list[str], name: str = "crm", **kw: Any) -> MySQLSource:
        settings = MySQLSettings(**self.server.settings)
        kw.setdefault("heartbeat_s", 0.1)
        src = MySQLSource(name, settings, [f"{self.db}.{t}" for t in tables], self.log, "crm", **kw)
        self.sources.append(src)
        return src

    def events(self, table: str) -> list[dict[str, Any]]:
        """Every event of the table's topic, in binlog order (file, pos, row); each
        event's partition and offset are added as ``_p``/``_o``, its key as ``_key``."""
        topic = f"crm.{self.db}.{table}"
        out = []
        for part in self.log.partitions(topic):
            offset = 0
            while True:
                recs = self.log.read(topic, part.partition, offset, 10_000)
                if not recs:
                    break
                for r in recs:
                    assert r.value is not None
                    ev = json.loads(r.value)
                    ev["_p"], ev["_o"] = r.partition, r.offset
                    ev["_key"] = json.loads(r.key or b"null")
                    ev["_position"] = r.headers["position"]
                    out.append(ev)
                offset = recs[-1].offset + 1
        out.sort(key=_binlog_order)
        return out

    def close(self) -> None:
        for s in self.sources:
            s.close()
        self.log.close()


def _binlog_order(ev: dict[str, Any]) -> tuple[int, str, int, int]:
    s = ev["source"]
    # Snapshot events first (in offset order per partition), then the stream.
    return (
        0 if ev["op"] == "r" else 1,
        s["file"],
        s["pos"],
        s["row"] if ev["op"] != "r" else ev["_o"],
    )


def _replay(events: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """Apply events per key in log order, as a replica would."""
    rows: dict[Any, dict[str, Any]] = {}
    for ev in sorted(events, key=lambda e: (e["_p"], e["_o"])):
        key = json.dumps(ev["_key"], sort_keys=True)
        if ev["op"] == "d":
            rows.pop(key, None)
        else:
            rows[key] = ev["after"]
    return rows


@pytest.fixture
def env(mariadb_server: MariaDB, pg_server: EmbeddedPostgres) -> Iterator[Env]:
    e = Env(mariadb_server, new_database(pg_server))
    try:
        yield e
    finally:
        e.close()


def _ops(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(e["op"], e["_key"]["id"]) for e in events]


def test_snapshot_then_stream_in_commit_order(env: Env) -> None:
    env.sql(
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(50), score INT)",
        "INSERT INTO customers VALUES (1, 'ada', 10), (2, 'bob', 20), (3, 'cy', 30)",
    )
    src = env.source(["customers"], snapshot_chunk=2)  # 3 rows: two chunks
    src.start()
    snap = env.events("customers")
    assert sorted(_ops(snap)) == [("r", 1), ("r", 2), ("r", 3)]
    assert {e["_key"]["id"]: e["after"] for e in snap}[2] == {"id": 2, "name": "bob", "score": 20}
    assert all(e["source"]["snapshot"] == "true" and e["before"] is None for e in snap)
    assert query(env.dsn, "SELECT done, rows_read FROM headwater.mysql_snapshot_progress") == [
        (True, 3)
    ]

    env.sql(
        "INSERT INTO customers VALUES (4, 'dee', 40)",
        "UPDATE customers SET score = 11 WHERE id = 1",
        "DELETE FROM customers WHERE id = 2",
        "UPDATE customers SET name = 'dee2' WHERE id = 4",
    )
    src.catch_up()
    stream = [e for e in env.events("customers") if e["op"] != "r"]
    assert _ops(stream) == [("c", 4), ("u", 1), ("d", 2), ("u", 4)]
    u1 = stream[1]
    assert u1["before"] == {"id": 1, "name": "ada", "score": 10}
    assert u1["after"] == {"id": 1, "name": "ada", "score": 11}
    assert stream[2]["before"]["name"] == "bob" and stream[2]["after"] is None
    for e in stream:
        s = e["source"]
        assert s["connector"] == "mysql" and s["name"] == "crm" and s["snapshot"] == "false"
        assert s["db"] == env.db and s["table"] == "customers" and s["gtid"].startswith("0-1-")
    # Per key, partition offsets follow commit order (id 4: c before u).
    id4 = [e for e in stream if e["_key"]["id"] == 4]
    assert id4[0]["_p"] == id4[1]["_p"] and id4[0]["_o"] < id4[1]["_o"]
    # The stored position is where the stream stands, and the last event says so.
    ((file, pos),) = query(
        env.dsn, "SELECT binlog_file, binlog_pos FROM headwater.mysql_source_state"
    )
    assert src.position is not None and (file, pos) == (src.position.file, src.position.pos)
    assert _replay(env.events("customers")) == {
        json.dumps({"id": r[0]}): {"id": r[0], "name": r[1], "score": r[2]}
        for r in env.sql("SELECT id, name, score FROM customers")
    }


def test_snapshot_meets_stream_with_no_gap_and_no_overlap(env: Env) -> None:
    """Inserts run while the snapshot reads in small chunks: every row arrives exactly
    once, either in the snapshot ('r') or in the stream ('c')."""
    env.sql("CREATE TABLE items (id INT PRIMARY KEY, v INT)")
    env.sql(
        *[
            f"INSERT INTO items VALUES {', '.join(f'({i}, {i})' for i in range(b, b + 500))}"
            for b in range(0, 3000, 500)
        ]
    )
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        conn = env.server.connect(database=env.db)
        i = 100_000
        with conn.cursor() as cur:
            while not stop.is_set():
                cur.execute("INSERT INTO items VALUES (%s, %s)", (i, i))
                written.append(i)
                i += 1
        conn.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        src = env.source(["items"], snapshot_chunk=100)
        src.start()
    finally:
        stop.set()
        t.join()
    assert written, "the writer ran during the snapshot"
    src.catch_up()
    events = env.events("items")
    ids = [e["_key"]["id"] for e in events]
    assert len(ids) == len(set(ids)), "a row arrived twice (overlap)"
    assert set(ids) == set(range(3000)) | set(written), "a row is missing (gap)"
    assert all(e["op"] == "c" for e in events if e["_key"]["id"] >= 100_000 and e["op"] != "r")


def test_multi_row_transactions_stay_whole_and_ordered(env: Env) -> None:
    env.sql(
        "CREATE TABLE a (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE b (id INT PRIMARY KEY, v INT)",
    )
    src = env.source(["a", "b"])
    src.start()
    conn = env.server.connect(database=env.db, autocommit=False)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO a VALUES (1, 1), (2, 2), (3, 3)")
        cur.execute("INSERT INTO b VALUES (1, 10)")
        cur.execute("UPDATE a SET v = v + 100")
        conn.commit()
        cur.execute("INSERT INTO a VALUES (9, 9)")
        conn.rollback()  # never in the binlog
        cur.execute("DELETE FROM a WHERE id < 3")
        cur.execute("UPDATE b SET v = 11")
        conn.commit()
    conn.close()
    src.catch_up()
    ea, eb = env.events("a"), env.events("b")
    assert 9 not in {e["_key"]["id"] for e in ea}
    first = [e for e in ea + eb if e["source"]["gtid"] == ea[0]["source"]["gtid"]]
    assert len(first) == 7  # 3 inserts + 1 insert in b + 3 updates, one transaction
    assert len({e["source"]["pos"] for e in first}) == 1
    assert sorted(e["source"]["row"] for e in first) == list(range(7))
    assert len({e["_position"] for e in first}) == 1  # all end at the same commit
    assert _ops(ea) == [
        ("c", 1),
        ("c", 2),
        ("c", 3),
        ("u", 1),
        ("u", 2),
        ("u", 3),
        ("d", 1),
        ("d", 2),
    ]
    second = [e for e in ea + eb if e["source"]["gtid"] != ea[0]["source"]["gtid"]]
    assert {(e["op"], e["source"]["table"]) for e in second} == {("d", "a"), ("u", "b")}
    assert len({e["source"]["gtid"] for e in second}) == 1


_TYPES = """CREATE TABLE t (
    id INT PRIMARY KEY, i INT, big BIGINT UNSIGNED, neg BIGINT, dec_ DECIMAL(12, 4),
    vc VARCHAR(40), tx TEXT, dt DATETIME(6), d DATE, ts TIMESTAMP(3) NULL, tm TIME,
    j JSON, bl BLOB, vb VARBINARY(8), e ENUM('red', 'green', 'blue'), flag TINYINT(1),
    nul VARCHAR(5))"""
_ROW = (
    "{id}, -7, 18446744073709551615, -9223372036854775808, -12345.6700, 'héllo ✓',"
    " 'long text', '2024-02-29 23:59:58.123456', '1999-12-31', '2024-05-06 07:08:09.250',"
    " '-12:34:56', '{{\"k\": [1, 2.5, null]}}', x'00ff10', x'cafe', 'green', 1, NULL"
)
_EXPECTED = {
    "i": -7,
    "big": 18446744073709551615,
    "neg": -9223372036854775808,
    "dec_": "-12345.6700",
    "vc": "héllo ✓",
    "tx": "long text",
    "dt": "2024-02-29T23:59:58.123456",
    "d": "1999-12-31",
    "ts": "2024-05-06T07:08:09.250000",
    "tm": "-12:34:56",
    "j": '{"k": [1, 2.5, null]}',
    "bl": "AP8Q",
    "vb": "yv4=",
    "e": "green",
    "flag": 1,
    "nul": None,
}


def test_common_types_decode_alike_in_snapshot_and_stream(env: Env) -> None:
    env.sql("SET time_zone = '+00:00'", _TYPES, f"INSERT INTO t VALUES ({_ROW.format(id=1)})")
    src = env.source(["t"])
    src.start()
    env.sql("SET time_zone = '+00:00'", f"INSERT INTO t VALUES ({_ROW.format(id=2)})")
    env.sql("UPDATE t SET nul = 'x', dec_ = 0.5 WHERE id = 2")
    src.catch_up()
    r, c, u = env.events("t")
    assert (r["op"], c["op"], u["op"]) == ("r", "c", "u")
    assert r["after"] == {"id": 1, **_EXPECTED}
    assert c["after"] == {"id": 2, **_EXPECTED}
    assert u["after"] == {"id": 2, **_EXPECTED, "nul": "x", "dec_": "0.5000"}
    json.dumps(u)  # every value is JSON-safe


def test_restart_resumes_without_loss_or_duplicates(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.sql("CREATE TABLE k (id INT PRIMARY KEY, v INT)", "INSERT INTO k VALUES (0, 0)")
    src = env.source(["k"])
    src.start()
    env.sql(*[f"INSERT INTO k VALUES ({i}, {i})" for i in range(1, 21)])
    src.catch_up()
    src.close()

    # Changes while stopped, then a crash in the middle of a flush: the position write
    # fails after the events were appended in the same transaction.
    env.sql(*[f"UPDATE k SET v = v + 1 WHERE id = {i}" for i in range(1, 11)])
    env.sql("DELETE FROM k WHERE id > 15")
    crashing = env.source(["k"], flush_events=1)
    real_save = mysql_state.save_position
    calls = itertools.count()

    def save_then_crash(*args: Any) -> None:
        real_save(*args)
        if next(calls) == 3:
            raise RuntimeError("crash after append, before commit")

    monkeypatch.setattr(mysql_state, "save_position", save_then_crash)
    with pytest.raises(RuntimeError, match="crash"):
        crashing.catch_up()
    crashing.close()
    monkeypatch.setattr(mysql_state, "save_position", real_save)
    committed = len(env.events("k"))
    assert committed == 1 + 20 + 3  # snapshot + inserts + the three flushes that committed

    env.sql("INSERT INTO k VALUES (100, 100)")
    again = env.source(["k"])
    again.start()
    assert not [e for e in env.events("k") if e["op"] == "r" and e["_key"]["id"] != 0]
    again.catch_up()
    events = env.events("k")
    ident = [
        (e["source"]["file"], e["source"]["pos"], e["source"]["row"])
        for e in events
        if e["op"] != "r"
    ]
    assert len(ident) == len(set(ident)), "an event was appended twice"
    assert [e["op"] for e in events].count("u") == 10
    assert [e["op"] for e in events].count("d") == 5
    assert _ops(events)[-1] == ("c", 100)
    assert _replay(events) == {
        json.dumps({"id": i}): {"id": i, "v": v} for i, v in env.sql("SELECT id, v FROM k")
    }


def test_ddl_mid_stream_decodes_with_the_columns_of_the_time(env: Env) -> None:
    """All DDL happens while the source is stopped, so old rows must decode with the
    old columns although the live table has changed (names come from the binlog)."""
    env.sql("CREATE TABLE p (id INT PRIMARY KEY, name VARCHAR(20), age INT)")
    src = env.source(["p"])
    src.start()
    src.close()
    env.sql(
        "INSERT INTO p VALUES (1, 'ada', 36)",
        "ALTER TABLE p ADD COLUMN email VARCHAR(50)",
        "INSERT INTO p VALUES (2, 'bob', 40, 'b@x')",
        "ALTER TABLE p RENAME COLUMN name TO full_name",
        "UPDATE p SET full_name = 'Ada L' WHERE id = 1",
        "ALTER TABLE p DROP COLUMN age",
        "INSERT INTO p VALUES (3, 'cy', 'c@x')",
        "ALTER TABLE p MODIFY COLUMN email TEXT, MODIFY COLUMN id BIGINT",
        "INSERT INTO p VALUES (4000000000, 'dee', 'd@x')",
    )
    again = env.source(["p"])
    again.start()
    again.catch_up()
    ev = env.events("p")
    assert [e["after"] for e in ev] == [
        {"id": 1, "name": "ada", "age": 36},
        {"id": 2, "name": "bob", "age": 40, "email": "b@x"},
        {"id": 1, "full_name": "Ada L", "age": 36, "email": None},
        {"id": 3, "full_name": "cy", "email": "c@x"},
        {"id": 4000000000, "full_name": "dee", "email": "d@x"},
    ]
    assert ev[2]["before"] == {"id": 1, "full_name": "ada", "age": 36, "email": None}
    # Every column change gives a new schema version; the same shape keeps its version.
    versions = [e["source"]["schema_version"] for e in ev]
    assert len(set(versions)) == 5


def test_truncate_reaches_every_partition_and_the_replica(env: Env) -> None:
    env.sql("CREATE TABLE t (id INT PRIMARY KEY, v INT)", "INSERT INTO t VALUES (1, 1), (2, 2)")
    src = env.source(["t"])
    src.start()
    env.sql(
        "INSERT INTO t VALUES (3, 3), (4, 4)",
        "TRUNCATE TABLE t",
        "INSERT INTO t VALUES (5, 5)",
        f"TRUNCATE `{env.db}`.`t`",
        "INSERT INTO t VALUES (6, 6), (7, 7)",
        "UPDATE t SET v = 70 WHERE id = 7",
    )
    src.catch_up()
    ev = env.events("t")
    truncates = [e for e in ev if e["op"] == "t"]
    assert sorted(e["_p"] for e in truncates) == [0, 0, 1, 1, 2, 2]
    assert all(e["source"]["table"] == "t" and e["after"] is None for e in truncates)
    topic = f"crm.{env.db}.t"
    stats = merge(env.log, topic, ReplicaSink("crm", "t"), batch=3)
    assert stats.dead_letters == 0
    assert query(env.dsn, "SELECT id, v FROM crm.t ORDER BY id") == [(6, 6), (7, 70)]


def test_primary_key_change_is_delete_then_create(env: Env) -> None:
    env.sql("CREATE TABLE q (id INT PRIMARY KEY, v INT)", "INSERT INTO q VALUES (1, 1)")
    src = env.source(["q"])
    src.start()
    env.sql("UPDATE q SET id = 2 WHERE id = 1")
    src.catch_up()
    assert _ops(env.events("q")) == [("r", 1), ("d", 1), ("c", 2)]


def test_refuses_non_row_binlog_and_tables_without_key(env: Env) -> None:
    env.sql("CREATE TABLE nokey (v INT)", "CREATE TABLE ok (id INT PRIMARY KEY)")
    with pytest.raises(SourceError, match=r"no primary key.*ADD PRIMARY KEY"):
        env.source(["nokey"]).start()
    try:
        env.server.execute("SET GLOBAL binlog_format = 'STATEMENT'")
        with pytest.raises(SourceError, match=r"binlog_format is STATEMENT.*binlog_format=ROW"):
            env.source(["ok"]).start()
        env.server.execute(
            "SET GLOBAL binlog_format = 'ROW'", "SET GLOBAL binlog_row_metadata = 'MINIMAL'"
        )
        with pytest.raises(SourceError, match=r"binlog_row_metadata is MINIMAL"):
            env.source(["ok"]).start()
    finally:
        env.server.execute(
            "SET GLOBAL binlog_format = 'ROW'", "SET GLOBAL binlog_row_metadata = 'FULL'"
        )
    assert not query(env.dsn, "SELECT * FROM headwater.mysql_source_state")


def test_refuses_purged_binlog_with_how_to_resnapshot(env: Env) -> None:
    env.sql("CREATE TABLE r (id INT PRIMARY KEY)", "INSERT INTO r VALUES (1)")
    src = env.source(["r"])
    src.start()
    src.close()
    env.server.execute("FLUSH BINARY LOGS")
    ((current, *_),) = env.server.execute("SHOW MASTER STATUS")
    assert src.position is not None
    deadline = time.monotonic() + 10
    # MariaDB keeps a file until InnoDB has checkpointed it (binlog checkpoint): retry.
    while src.position.file in [r[0] for r in env.server.execute("SHOW BINARY LOGS")]:
        assert time.monotonic() < deadline, "could not purge the binlog"
        env.server.execute(f"PURGE BINARY LOGS TO '{current}'")
        time.sleep(0.1)
    again = env.source(["r"])
    with pytest.raises(SourceError, match=r"no longer on the server.*`headwater resnapshot \S+`"):
        again.start()
    again.reset()
    again.start()  # a new snapshot
    assert [e["op"] for e in env.events("r")] == ["r", "r"]


def test_refuses_server_without_binlog(tmp_path: Path, pg_server: EmbeddedPostgres) -> None:
    server = start_mariadb(tmp_path, binlog=False)
    try:
        log = PostgresLog(new_database(pg_server))
        src = MySQLSource("x", MySQLSettings(**server.settings), ["mysql.user"], log, "x")
        with pytest.raises(SourceError, match=r"binary log is off.*log-bin"):
            src.start()
        log.close()
    finally:
        server.stop()
    assert server.proc.poll() is not None


def test_snapshot_crash_resumes_and_converges(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after two snapshot chunks: the restart reads only the rest (in a later
    view) and streams from the first snapshot's position; replaying the log per key
    gives the source table exactly."""
    env.sql(
        "CREATE TABLE s (id INT PRIMARY KEY, v INT)",
        "INSERT INTO s VALUES " + ", ".join(f"({i}, 0)" for i in range(50)),
    )
    real = mysql_state.save_progress
    calls = itertools.count()

    def crash_on_third(*args: Any) -> None:
        if next(calls) == 2:
            raise RuntimeError("crash during snapshot")
        real(*args)

    monkeypatch.setattr(mysql_state, "save_progress", crash_on_third)
    with pytest.raises(RuntimeError, match="crash during snapshot"):
        env.source(["s"], snapshot_chunk=10).start()
    monkeypatch.setattr(mysql_state, "save_progress", real)
    assert len(env.events("s")) == 20  # two chunks committed, the third rolled back

    # Changes in the part already read and in the part still to read.
    env.sql(
        "UPDATE s SET v = 1 WHERE id IN (5, 45)",
        "DELETE FROM s WHERE id IN (6, 40)",
        "INSERT INTO s VALUES (60, 1)",
        "UPDATE s SET v = 2 WHERE id = 45",
    )
    again = env.source(["s"], snapshot_chunk=10)
    again.start()
    snap = [e for e in env.events("s") if e["op"] == "r"]
    ids = [e["_key"]["id"] for e in snap]
    assert len(ids) == len(set(ids)), "the resumed snapshot re-read finished chunks"
    assert 40 not in ids and 60 in ids  # the rest was read in the later view
    again.catch_up()
    stream = [e for e in env.events("s") if e["op"] != "r"]
    assert len(stream) == 6  # streaming started at the first snapshot's position
    assert _replay(env.events("s")) == {
        json.dumps({"id": i}): {"id": i, "v": v} for i, v in env.sql("SELECT id, v FROM s")
    }
