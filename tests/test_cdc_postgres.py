"""PostgreSQL CDC source against a real PostgreSQL 18 (the session server, wal_level=logical).

The source database is a second fresh database on the session server; Headwater's
log and state live in the test's own database. Every test drops its slots.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from headwater.errors import SourceError
from headwater.log.postgres import PostgresLog
from headwater.sources.postgres import PostgresSource
from headwater.sources.postgres import pgoutput as po
from headwater.sources.postgres.envelope import convert_row, shape_of
from headwater.sources.postgres.values import ValueDecoder, parse_array
from headwater.storage.embedded import EmbeddedPostgres

from .conftest import new_database, query


def _drop_slots(dsn: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                    " WHERE database = current_database()"
                )
            return
        except psycopg.errors.ObjectInUse:  # a walsender still exiting
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def src(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A fresh source database; its slots are dropped at the end."""
    dsn = new_database(pg_server, "src")
    yield dsn
    _drop_slots(dsn)


@pytest.fixture
def log(dsn: str) -> Iterator[PostgresLog]:
    lg = PostgresLog(dsn)
    yield lg
    lg.close()


def sql(dsn: str, *stmts: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        for s in stmts:
            c.execute(s)  # type: ignore[call-overload]


@contextmanager
def running(source: PostgresSource) -> Iterator[PostgresSource]:
    """Run ``source`` in a thread; stop it and re-raise its error at the end."""
    err: list[BaseException] = []

    def target() -> None:
        try:
            source.run()
        except BaseException as exc:
            err.append(exc)

    th = threading.Thread(target=target, daemon=True)
    th.start()
    try:
        yield source
    finally:
        source.stop()
        th.join(30)
        assert not th.is_alive(), "source did not stop"
    if err:
        raise err[0]


def events(log: PostgresLog, topic: str) -> list[dict[str, Any]]:
    """All events of ``topic`` (every partition), ordered by source position, with the
    record's key and headers under ``_key`` / ``_headers``."""
    out = []
    for p in log.partitions(topic):
        offset = p.start_offset
        while True:
            recs = log.read(topic, p.partition, offset, 10_000)
            if not recs:
                break
            for r in recs:
                assert r.value is not None
                ev = json.loads(r.value)
                ev["_key"] = r.key
                ev["_headers"] = dict(r.headers)
                ev["_offset"] = (r.partition, r.offset)
                out.append(ev)
            offset = recs[-1].offset + 1
    out.sort(key=lambda e: (e["source"]["lsn"], e["_offset"]))
    return out


def wait_for(pred: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def wait_snapshot(log: PostgresLog, source: str) -> None:
    """Until the source's initial snapshot is done (later commits are streamed)."""
    wait_for(
        lambda: (
            query(
                log.dsn,
                "SELECT snapshot_done FROM headwater.source_state WHERE source = %s",
                (source,),
            )
            == [(True,)]
        )
    )


def wait_events(log: PostgresLog, topic: str, n: int) -> list[dict[str, Any]]:
    wait_for(lambda: _count(log, topic) >= n)
    evs = events(log, topic)
    assert len(evs) == n, [(e["op"], e["after"], e["before"]) for e in evs]
    return evs


def _count(log: PostgresLog, topic: str) -> int:
    try:
        return sum(p.end_offset - p.start_offset for p in log.partitions(topic))
    except Exception:
        return 0


# -- values and decoder ---------------------------------------------------------------


def test_array_literal_parser() -> None:
    assert parse_array("{1,NULL,3}") == ["1", None, "3"]
    assert parse_array('{"a b","NULL","q\\"x","b\\\\s"}') == ["a b", "NULL", 'q"x', "b\\s"]
    assert parse_array("{{1,2},{3,4}}") == [["1", "2"], ["3", "4"]]
    assert parse_array("[0:1]={7,8}") == ["7", "8"]
    assert parse_array("{}") == []
    with pytest.raises(ValueError):
        parse_array("{1,2")


def test_decoder_on_real_pgoutput_messages(src: str) -> None:
    """Decode the bytes pgoutput really produced (peeked through SQL) for inserts,
    updates (old key, old row, unchanged TOAST), deletes and truncate over the common
    types, NULLs included."""
    sql(
        src,
        "CREATE TYPE mood AS ENUM ('ok', 'sad')",
        "CREATE TABLE t (id int8 PRIMARY KEY, i2 int2, i4 int4, f8 float8, n numeric(12,3),"
        " b bool, tx text, vc varchar(10), ts timestamp, tz timestamptz, d date, u uuid,"
        " j json, jb jsonb, by bytea, ai int4[], at text[], m mood, am mood[], big text)",
        "ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL",
        "CREATE TABLE f (id int PRIMARY KEY, v text)",
        "ALTER TABLE f REPLICA IDENTITY FULL",
        "CREATE PUBLICATION p FOR TABLE t, f",
        "SELECT pg_create_logical_replication_slot('dec', 'pgoutput')",
        "INSERT INTO t VALUES (1, -2, 3, 1.5, 12.345, true, 'tab\there', 'x',"
        " '2024-01-02 03:04:05.25', '2024-01-02 03:04:05+02', '2024-02-29',"
        " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, 2]}', '{\"z\": null}',"
        " '\\x00ff10', '{1,NULL,3}', '{\"a,b\",NULL}', 'sad', '{ok,sad}',"
        " repeat('x', 5000) || md5('a'))",
        "INSERT INTO t (id) VALUES (2)",
        "UPDATE t SET i4 = 4 WHERE id = 1",
        "UPDATE t SET id = 10 WHERE id = 2",
        "DELETE FROM t WHERE id = 10",
        "INSERT INTO f VALUES (1, 'a')",
        "UPDATE f SET v = 'b' WHERE id = 1",
        "DELETE FROM f WHERE id = 1",
        "TRUNCATE t",
    )
    rows = query(
        src,
        "SELECT data FROM pg_logical_slot_get_binary_changes('dec', NULL, NULL,"
        " 'proto_version', '1', 'publication_names', 'p')",
    )
    msgs = [po.decode(bytes(r[0])) for r in rows]
    kinds = [type(m).__name__ for m in msgs]
    # 9 transactions, each Begin ... Commit.
    assert kinds.count("Begin") == kinds.count("Commit") == 9
    dec = ValueDecoder()
    shapes = {}
    for m in msgs:
        if isinstance(m, po.Type):
            dec.register_type(m.oid, m.name)
        if isinstance(m, po.Relation):
            shapes[m.relid] = shape_of(m, dec)
    rel_t = next(m for m in msgs if isinstance(m, po.Relation) and m.name == "t")
    assert rel_t.namespace == "public" and rel_t.replica_identity == "d"
    assert [c.name for c in rel_t.columns if c.is_key] == ["id"]
    assert {m.name for m in msgs if isinstance(m, po.Type)} >= {"mood", "_mood"}
    st = shapes[rel_t.relid]
    ins = [m for m in msgs if isinstance(m, po.Insert) and m.relid == rel_t.relid]
    row, missing = convert_row(st, ins[0].new)
    assert missing == []
    assert row == {
        "id": 1,
        "i2": -2,
        "i4": 3,
        "f8": 1.5,
        "n": "12.345",
        "b": True,
        "tx": "tab\there",
        "vc": "x",
        "ts": "2024-01-02T03:04:05.25",
        "tz": "2024-01-02T01:04:05Z",  # converted to UTC
        "d": "2024-02-29",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "j": {"k": [1, 2]},
        "jb": {"z": None},
        "by": "AP8Q",
        "ai": [1, None, 3],
        "at": ["a,b", None],
        "m": "sad",
        "am": ["ok", "sad"],
        "big": "x" * 5000 + "0cc175b9c0f1b6a831c399e269772661",
    }
    row2, _ = convert_row(st, ins[1].new)
    assert row2["id"] == 2 and all(v is None for k, v in row2.items() if k != "id")
    ups = [m for m in msgs if isinstance(m, po.Update) and m.relid == rel_t.relid]
    # Unchanged TOASTed value is not resent; key unchanged → no old tuple.
    assert ups[0].old is None and ups[0].new[-1] is po.UNCHANGED
    after, missing = convert_row(st, ups[0].new)
    assert missing == ["big"] and "big" not in after and after["i4"] == 4
    # Key change → old key tuple 'K'.
    assert ups[1].old_kind == "K" and ups[1].old is not None
    assert convert_row(st, ups[1].old)[0]["id"] == 2
    dels = [m for m in msgs if isinstance(m, po.Delete)]
    assert dels[0].old_kind == "K" and convert_row(st, dels[0].old)[0]["id"] == 10
    rel_f = next(m for m in msgs if isinstance(m, po.Relation) and m.name == "f")
    assert rel_f.replica_identity == "f"
    sf = shapes[rel_f.relid]
    upf = next(m for m in msgs if isinstance(m, po.Update) and m.relid == rel_f.relid)
    assert upf.old_kind == "O" and upf.old is not None
    assert convert_row(sf, upf.old)[0] == {"id": 1, "v": "a"}
    assert convert_row(sf, upf.new)[0] == {"id": 1, "v": "b"}
    assert dels[1].old_kind == "O" and convert_row(sf, dels[1].old)[0] == {"id": 1, "v": "b"}
    tr = next(m for m in msgs if isinstance(m, po.Truncate))
    assert tr.relids == (rel_t.relid,) and not tr.cascade
    begins = [m for m in msgs if isinstance(m, po.Begin)]
    commits = [m for m in msgs if isinstance(m, po.Commit)]
    for b, c in zip(begins, commits, strict=True):
        assert b.final_lsn == c.commit_lsn < c.end_lsn
        assert abs(c.commit_ts_us / 1e6 - time.time()) < 600
    assert [b.xid for b in begins] == sorted(b.xid for b in begins)


def test_decoder_rejects_garbage() -> None:
    with pytest.raises(po.DecodeError):
        po.decode(b"Z123")
    with pytest.raises(po.DecodeError):
        po.decode(b"I\x00\x00\x00\x01N\x00\x01t\x00\x00\x00\x09ab")  # value runs past end
    assert po.format_lsn(po.parse_lsn("16/B374D848")) == "16/B374D848"


# -- the source -----------------------------------------------------------------------


def test_snapshot_then_stream_in_commit_order(src: str, log: PostgresLog) -> None:
    sql(
        src,
        "CREATE TABLE acct (id int PRIMARY KEY, owner text, balance numeric)",
        "INSERT INTO acct SELECT g, 'o' || g, g * 10 FROM generate_series(1, 25) g",
    )
    source = PostgresSource("crm", src, ["acct"], log, chunk_rows=10)
    topic = "crm.public.acct"
    with running(source):
        snap = wait_events(log, topic, 25)
        assert {e["op"] for e in snap} == {"r"}
        assert sorted(e["after"]["id"] for e in snap) == list(range(1, 26))
        assert all(e["source"]["snapshot"] == "true" for e in snap)
        assert all(json.loads(e["_key"]) == {"id": e["after"]["id"]} for e in snap)
        xids = []
        with psycopg.connect(src, autocommit=True) as c:
            for stmt in (
                "INSERT INTO acct VALUES (100, 'new', 1)",
                "UPDATE acct SET balance = 99 WHERE id = 1",
                "DELETE FROM acct WHERE id = 2",
            ):
                with c.transaction():
                    c.execute(stmt)
                    xids.append(int(c.execute("SELECT pg_current_xact_id()::text").fetchone()[0]))  # type: ignore[index]
            with c.transaction():  # one transaction, three rows
                c.execute("UPDATE acct SET owner = 'bulk' WHERE id IN (3, 4, 5)")
                xids.append(int(c.execute("SELECT pg_current_xact_id()::text").fetchone()[0]))  # type: ignore[index]
        evs = wait_events(log, topic, 25 + 6)[25:]
    assert [e["op"] for e in evs] == ["c", "u", "d", "u", "u", "u"]
    assert evs[0]["after"] == {"id": 100, "owner": "new", "balance": "1"}
    assert evs[1]["after"]["balance"] == "99" and evs[1]["before"] is None
    assert evs[2]["before"] == {"id": 2} and evs[2]["after"] is None
    assert json.loads(evs[2]["_key"]) == {"id": 2}
    assert sorted(e["after"]["id"] for e in evs[3:]) == [3, 4, 5]
    assert [e["source"]["txId"] for e in evs] == xids[:3] + [xids[3]] * 3
    # One commit LSN and position per transaction, increasing in commit order.
    lsns = [e["source"]["lsn"] for e in evs]
    positions = [po.parse_lsn(e["_headers"]["position"]) for e in evs]
    assert lsns[3] == lsns[4] == lsns[5] and len(set(lsns)) == 4
    assert positions[3] == positions[4] == positions[5]
    assert lsns == sorted(lsns) and positions == sorted(positions)
    assert all(lsn < pos for lsn, pos in zip(lsns, positions, strict=True))
    assert all(e["_headers"]["txid"] == str(e["source"]["txId"]) for e in evs)
    # The slot was confirmed up to the last appended commit.
    (confirmed,) = query(
        src,
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name ="
        " 'headwater_crm'",
    )[0]
    assert po.parse_lsn(confirmed) >= positions[-1]
    assert source.guarantee == "exactly-once"


def test_restart_resumes_from_slot_exactly_once(
    src: str, log: PostgresLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guarantee on the postgres log: every committed change arrives exactly once,
    across a clean stop, changes made while stopped, and a crash between the append
    and the slot confirmation."""
    sql(src, "CREATE TABLE k (id int PRIMARY KEY, v int)")
    topic = "s.public.k"

    def mk() -> PostgresSource:
        return PostgresSource("s", src, ["k"], log)

    with running(mk()):
        wait_snapshot(log, "s")
        sql(src, "INSERT INTO k VALUES (1, 1)")
        wait_events(log, topic, 1)
    with psycopg.connect(src) as c:  # while stopped, one transaction of two rows
        c.execute("INSERT INTO k VALUES (2, 2)")
        c.execute("UPDATE k SET v = 10 WHERE id = 1")

    # Crash after the append committed, before send_feedback: the slot will resend.
    src2 = mk()
    real_flush = PostgresSource._flush

    class Crash(Exception):
        pass

    def crashing_flush(self: PostgresSource, cur: Any) -> None:
        def no_feedback(**_: Any) -> None:
            raise Crash

        class Cur:
            send_feedback = staticmethod(no_feedback)

        real_flush(self, Cur())

    monkeypatch.setattr(PostgresSource, "_flush", crashing_flush)
    with pytest.raises(Crash), running(src2):
        wait_for(lambda: _count(log, topic) >= 3)
    monkeypatch.setattr(PostgresSource, "_flush", real_flush)
    assert _count(log, topic) == 3

    src3 = mk()
    with running(src3):
        sql(src, "DELETE FROM k WHERE id = 2")
        evs = wait_events(log, topic, 4)
        time.sleep(0.5)
    assert src3.stats["skipped_tx"] >= 1  # the resent, already appended transactions
    got = [(e["op"], (e["after"] or e["before"])["id"]) for e in evs]
    # Order across keys inside one transaction is not defined (different partitions).
    assert got[0] == ("c", 1) and set(got[1:3]) == {("c", 2), ("u", 1)} and got[3] == ("d", 2)
    assert evs[1]["source"]["txId"] == evs[2]["source"]["txId"]
    assert _count(log, topic) == 4


def test_snapshot_resumes_after_crash_without_duplicates(
    src: str, log: PostgresLog, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "headwater.sources")
    sql(
        src,
        "CREATE TABLE big (a int, b text, PRIMARY KEY (a, b))",
        "INSERT INTO big SELECT g / 3, 'x' || g FROM generate_series(1, 50) g",
    )
    topic = "b.public.big"
    real_commit = PostgresSource._commit
    calls = {"n": 0}

    def flaky_commit(self: PostgresSource, by_topic: Any, position: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("crash during the snapshot")
        real_commit(self, by_topic, position)

    monkeypatch.setattr(PostgresSource, "_commit", flaky_commit)
    with pytest.raises(RuntimeError), running(PostgresSource("b", src, ["big"], log, chunk_rows=7)):
        wait_for(lambda: calls["n"] >= 3)
    monkeypatch.setattr(PostgresSource, "_commit", real_commit)
    assert _count(log, topic) == 14  # two chunks made it
    sql(src, "INSERT INTO big VALUES (100, 'late')")
    with running(PostgresSource("b", src, ["big"], log, chunk_rows=7)):
        # 50 rows once each, read before or after the crash; the row committed after the
        # slot's start is read by the resumed (newer) snapshot AND streamed: documented
        # at-least-once overlap of a resumed snapshot, which converges when upserted.
        evs = wait_events(log, topic, 52)
    keys = [(e["after"]["a"], e["after"]["b"]) for e in evs if e["op"] == "r"]
    assert len(keys) == len(set(keys)) == 51
    assert [(e["op"], e["after"]) for e in evs if e["op"] != "r"] == [
        ("c", {"a": 100, "b": "late"})
    ]
    assert set(keys) == set(query(src, "SELECT a, b FROM big"))
    assert json.loads(evs[0]["_key"]).keys() == {"a", "b"}
    # Progress counts across the crash: 14 rows before it, 37 after.
    assert "snapshot of public.big done: 51 rows" in caplog.text


def test_schema_changes_mid_stream_and_across_restart(src: str, log: PostgresLog) -> None:
    sql(src, "CREATE TABLE sc (id int PRIMARY KEY, a int, b text)")
    topic = "sc.public.sc"

    def mk() -> PostgresSource:
        return PostgresSource("sc", src, ["sc"], log)

    with running(mk()):
        wait_snapshot(log, "sc")
        sql(
            src,
            "INSERT INTO sc VALUES (1, 1, 'one')",
            "ALTER TABLE sc ADD COLUMN c jsonb DEFAULT '{\"d\": 1}'",
            "INSERT INTO sc VALUES (2, 2, 'two', '[1]')",
            "ALTER TABLE sc RENAME COLUMN b TO name",
            "UPDATE sc SET name = 'uno' WHERE id = 1",
        )
        wait_events(log, topic, 3)
    # Changed while stopped: decoded with the shapes of their time after restart.
    sql(
        src,
        "ALTER TABLE sc ALTER COLUMN a TYPE text USING a::text || '!'",
        "INSERT INTO sc VALUES (3, 'three', 'tres')",
        "ALTER TABLE sc DROP COLUMN c",
        "INSERT INTO sc VALUES (4, 'four', 'cuatro')",
    )
    with running(mk()):
        evs = wait_events(log, topic, 5)
    afters = [e["after"] for e in evs]
    assert afters == [
        {"id": 1, "a": 1, "b": "one"},
        {"id": 2, "a": 2, "b": "two", "c": [1]},
        {"id": 1, "a": 1, "name": "uno", "c": {"d": 1}},
        {"id": 3, "a": "three", "name": "tres", "c": {"d": 1}},
        {"id": 4, "a": "four", "name": "cuatro"},
    ]
    versions = [e["source"]["schema_version"] for e in evs]
    assert len(set(versions)) == 5  # each shape has its own fingerprint
    st = query(log.dsn, "SELECT state->'schema_versions'->>'public.sc' FROM headwater.source_state")
    assert st == [(versions[-1],)]


def test_dropped_slot_is_refused_with_reset_hint(src: str, log: PostgresLog) -> None:
    sql(src, "CREATE TABLE d (id int PRIMARY KEY)", "INSERT INTO d VALUES (1)")
    topic = "gone.public.d"
    with running(PostgresSource("gone", src, ["d"], log)):
        wait_events(log, topic, 1)
    _drop_slots(src)
    sql(src, "INSERT INTO d VALUES (2)")  # would be lost silently without the check
    source = PostgresSource("gone", src, ["d"], log)
    hint = r"headwater_gone was dropped.*`headwater resnapshot gone`"
    with pytest.raises(SourceError, match=hint):
        source.run()
    source.reset()
    with running(PostgresSource("gone", src, ["d"], log)):
        evs = wait_events(log, topic, 3)
    assert [(e["op"], e["after"]["id"]) for e in evs[1:]] == [("r", 1), ("r", 2)]


def test_refusals_name_the_fix(src: str, log: PostgresLog) -> None:
    sql(src, "CREATE TABLE nokey (v int)")
    with pytest.raises(SourceError, match="does not exist"):
        PostgresSource("r1", src, ["public.missing"], log).run()
    with pytest.raises(SourceError, match="REPLICA IDENTITY FULL"):
        PostgresSource("r2", src, ["nokey"], log).run()
    assert query(
        src, "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
    ) == [(0,)]
