"""The replica-table processor, fed with envelopes the real CDC sources produced.

A PostgreSQL source database (a second database on the session server) and, for one
test, the session MariaDB are captured into the log; a :class:`Worker` running
:class:`ReplicaSink` merges the topic into ``crm.<table>`` in Headwater's database,
and the replica is compared with the source table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from headwater.config.model import ReplicaPipeline, Settings
from headwater.engine.registry import build_processor
from headwater.log.base import LogRecord, Record, TopicSpec, dlq_topic
from headwater.log.postgres import PostgresLog
from headwater.sinks.replica import ReplicaSink, json_type, position_key, widen
from headwater.sources.postgres import PostgresSource
from headwater.storage.embedded import EmbeddedPostgres

from .conftest import merge, new_database, query
from .mariadb_server import MariaDB
from .mariadb_server import mariadb_server as mariadb_server
from .test_cdc_mysql import Env
from .test_cdc_postgres import _count, _drop_slots, running, sql, wait_for, wait_snapshot

COLS = "id, name, score, active, attrs, ratio, notes"


@pytest.fixture
def src(pg_server: EmbeddedPostgres) -> Iterator[str]:
    dsn = new_database(pg_server, "src")
    yield dsn
    _drop_slots(dsn)


@pytest.fixture
def log(dsn: str) -> Iterator[PostgresLog]:
    lg = PostgresLog(dsn)
    yield lg
    lg.close()


def rows(dsn: str, table: str, cols: str = COLS) -> list[tuple[Any, ...]]:
    return query(dsn, f"SELECT {cols} FROM {table} ORDER BY 1")


def all_records(log: PostgresLog, topic: str) -> list[LogRecord]:
    out: list[LogRecord] = []
    for p in log.partitions(topic):
        out.extend(log.read(topic, p.partition, p.start_offset, 100_000))
    return out


def wait_count(log: PostgresLog, topic: str, n: int) -> None:
    wait_for(lambda: _count(log, topic) >= n)
    assert _count(log, topic) == n


def _customers(src: str) -> None:
    sql(
        src,
        "CREATE TABLE customers (id int PRIMARY KEY, name text, score int, active bool,"
        " attrs jsonb, ratio float8, notes text)",
        "ALTER TABLE customers ALTER COLUMN notes SET STORAGE EXTERNAL",  # TOASTed, unsent
        "INSERT INTO customers SELECT g, 'c' || g, g * 10, g % 2 = 0,"
        " jsonb_build_object('tier', g % 3, 'tags', jsonb_build_array('a', g)), g / 4.0,"
        " repeat(md5(g::text), 200) FROM generate_series(1, 20) g",
    )


_WORKLOAD = (
    "INSERT INTO customers (id, name) VALUES (100, 'new')",  # 1
    "UPDATE customers SET score = -1, attrs = NULL WHERE id <= 5",  # 5, notes unchanged
    "DELETE FROM customers WHERE id IN (6, 7)",  # 2
    # Key changes: d old key, c new key. The TOASTed notes are set too: an unchanged
    # one is not sent and cannot be recovered (test_key_change_loses_unsent_toast).
    "UPDATE customers SET id = 200, notes = 'n8' WHERE id = 8",  # 2: d 8, c 200
    "UPDATE customers SET id = 9000, name = 'moved', notes = '' WHERE id = 9",  # 2
    "INSERT INTO customers VALUES (7, 'again', 1, true, '[1, {\"x\": null}]', 1.5, 'n')",  # 1
    "UPDATE customers SET notes = 'short now' WHERE id = 1",  # 1
)
_WORKLOAD_EVENTS = 14


# -- units ------------------------------------------------------------------------------


def _pk(p: str) -> int:
    k = position_key(p)
    assert k is not None
    return k


def test_position_key_sorts_each_source_in_order() -> None:
    pg = ["0/16B3748", "0/16B3749", "0/FFFFFFFF", "1/0", "16/B374D848"]
    assert [_pk(p) for p in pg] == sorted(_pk(p) for p in pg)
    assert position_key("16/B374D848") == 0x16B374D848
    assert position_key(23_930_696) == 23_930_696  # the envelope's lsn
    binlog = ["mysql-bin.000009:4", "mysql-bin.000009:1000", "mysql-bin.000010:4"]
    keys = [_pk(p) for p in binlog]
    assert keys == sorted(keys) and len(set(keys)) == 3
    assert position_key(None) is None
    with pytest.raises(ValueError):
        position_key("nope")


def test_type_inference_and_widening_rules() -> None:
    values: tuple[Any, ...] = (1, 2**70, 1.5, True, "x", {}, [], None)
    assert [json_type(v) for v in values] == [
        "bigint", "numeric", "double precision", "boolean", "text", "jsonb", "jsonb", None,
    ]  # fmt: skip
    assert widen("bigint", "double precision") == "double precision"
    assert widen("double precision", "bigint") is None
    assert widen("bigint", "text") == "text"
    assert widen("boolean", "jsonb") == "jsonb"
    assert widen("text", "jsonb") is None and widen("jsonb", "bigint") is None


def test_config_names_the_replica_processor() -> None:
    s = Settings.model_validate(
        {
            "topics": [{"name": "crm.public.customers"}],
            "pipelines": [
                {
                    "name": "replica-crm-customers",
                    "input": "crm.public.customers",
                    "processor": "replica",
                    "schema": "crm",
                    "table": "customers",
                }
            ],
        }
    )
    (p,) = s.pipelines
    assert isinstance(p, ReplicaPipeline)
    proc = build_processor(p)
    assert isinstance(proc, ReplicaSink) and (proc.schema, proc.table) == ("crm", "customers")
    assert proc.delivery == "exactly-once"
    with pytest.raises(ValueError, match="identifier"):
        Settings.model_validate(
            {"pipelines": [{**p.model_dump(by_alias=True), "schema": 'crm"; drop'}]}
        )
    with pytest.raises(ValueError):
        ReplicaSink("crm", "bad name")


# -- PostgreSQL source ------------------------------------------------------------------


def test_replica_equals_source_through_changes_and_truncate(src: str, log: PostgresLog) -> None:
    _customers(src)
    topic = "crm.public.customers"
    sink = ReplicaSink("crm", "customers")
    with running(PostgresSource("crm", src, ["customers"], log)):
        wait_count(log, topic, 20)
        merge(log, topic, sink)
        assert rows(log.dsn, "crm.customers") == rows(src, "customers")
        sql(src, *_WORKLOAD)
        wait_count(log, topic, 20 + _WORKLOAD_EVENTS)
        merge(log, topic, sink)
        got = rows(log.dsn, "crm.customers")
        assert got == rows(src, "customers")
        # The unchanged TOASTed notes were not in the update events, yet kept.
        ev = [json.loads(r.value or b"") for r in all_records(log, topic)]
        assert sum(1 for e in ev if e.get("unchanged_toast") == ["notes"]) >= 5
        assert {r[0]: r[6] for r in got}[2] == "c81e728d9d4c2f636f067f89cc14862c" * 200
        assert 8 not in {r[0] for r in got} and {200, 9000} <= {r[0] for r in got}
        # Bookkeeping: the last applied position and op per row.
        meta = dict(query(log.dsn, "SELECT id, _hw_op FROM crm.customers"))
        assert meta[100] == "c" and meta[3] == "u" and meta[20] == "r"
        (pos,) = query(log.dsn, "SELECT _hw_position FROM crm.customers WHERE id = 1")[0]
        assert pos == max((r.headers["position"] for r in all_records(log, topic)), key=_pk)

        # TRUNCATE then rows in the same transaction, then more rows later: the
        # truncate (one event per partition) removes exactly what preceded it.
        with psycopg.connect(src) as c:
            c.execute("INSERT INTO customers (id, name) VALUES (300, 'gone')")
            c.execute("TRUNCATE customers")
            c.execute("INSERT INTO customers (id, name) VALUES (1, 'after'), (2, 'after')")
        sql(src, "INSERT INTO customers (id, name) VALUES (3, 'later')")
        parts = len(log.partitions(topic))
        wait_count(log, topic, 20 + _WORKLOAD_EVENTS + 1 + parts + 3)
        merge(log, topic, sink, batch=2)
    assert rows(log.dsn, "crm.customers") == rows(src, "customers")
    assert [r[0] for r in rows(log.dsn, "crm.customers")] == [1, 2, 3]
    # Delivered again from the truncate on (an at-least-once log repeats whole
    # transactions in order): the same replica.
    again = []
    for p in range(parts):
        recs = [r for r in all_records(log, topic) if r.partition == p]
        (t,) = [i for i, r in enumerate(recs) if b'"op":"t"' in (r.value or b"")]
        again.extend(recs[t:])
    with psycopg.connect(log.dsn) as c:
        sink.process(c, again)
    assert rows(log.dsn, "crm.customers") == rows(src, "customers")


def test_rerun_after_rollback_and_batch_size_give_the_same_replica(
    src: str, log: PostgresLog
) -> None:
    """``process`` re-run on the same records after a rollback (what retries and
    bisection do) gives the same table; so does one record per batch (no collapsing)."""
    _customers(src)
    topic = "crm.public.customers"
    with running(PostgresSource("crm", src, ["customers"], log)):
        wait_snapshot(log, "crm")
        sql(src, *_WORKLOAD, "TRUNCATE customers", "INSERT INTO customers (id) VALUES (5)")
        sql(src, "INSERT INTO customers (id, name) VALUES (6, 'x')", "DELETE FROM customers")
        sql(src, "INSERT INTO customers SELECT g, 'z' FROM generate_series(1, 9) g")
        sql(src, "UPDATE customers SET score = 1 WHERE id > 3")
        parts = len(log.partitions(topic))
        wait_count(log, topic, 20 + _WORKLOAD_EVENTS + parts + 1 + 1 + 2 + 9 + 6)
    records = sorted(all_records(log, topic), key=lambda r: (r.partition, r.offset))
    want = rows(src, "customers")
    once, rerun, single = (ReplicaSink("r", n) for n in ("once", "rerun", "single"))
    with psycopg.connect(log.dsn) as c:
        once.setup(c)
        once.process(c, records)
    with psycopg.connect(log.dsn) as c:
        rerun.process(c, records)
        c.rollback()
        assert query(log.dsn, "SELECT to_regclass('r.rerun')") == [(None,)]
        rerun.process(c, records)
        c.commit()
        # Bisection: the second half re-run after a rolled-back savepoint.
        with pytest.raises(RuntimeError), c.transaction():
            rerun.process(c, records[len(records) // 2 :])
            raise RuntimeError("roll back")
    with psycopg.connect(log.dsn) as c:
        for r in records:
            single.process(c, [r])
    for t in ("r.once", "r.rerun", "r.single"):
        assert rows(log.dsn, t) == want, t
    meta = "id, _hw_position, _hw_position_key, _hw_partition, _hw_op"
    assert rows(log.dsn, "r.once", meta) == rows(log.dsn, "r.rerun", meta)
    assert rows(log.dsn, "r.once", meta) == rows(log.dsn, "r.single", meta)


def test_schema_changes_follow_the_documented_rule(src: str, log: PostgresLog) -> None:
    sql(src, "CREATE TABLE sc (id int PRIMARY KEY, a int, b text, gone text)")
    sql(src, "INSERT INTO sc VALUES (1, 1, 'one', 'g1'), (2, 2, 'two', 'g2'), (3, 3, 't', 'g3')")
    topic = "crm.public.sc"
    sink = ReplicaSink("crm", "sc")
    with running(PostgresSource("crm", src, ["sc"], log)):
        wait_count(log, topic, 3)
        merge(log, topic, sink)
        sql(
            src,
            "ALTER TABLE sc ADD COLUMN c jsonb DEFAULT '{\"d\": 1}'",  # added
            "INSERT INTO sc (id, a, b) VALUES (4, 4, 'four')",
            "ALTER TABLE sc RENAME COLUMN b TO name",  # renamed
            "UPDATE sc SET name = 'uno' WHERE id = 1",
            "ALTER TABLE sc DROP COLUMN gone",  # dropped
            "UPDATE sc SET a = 20 WHERE id = 2",
            "ALTER TABLE sc ALTER COLUMN a TYPE text USING a::text",  # int → text
            "INSERT INTO sc (id, a, name) VALUES (5, 'five', 'cinq')",
            "UPDATE sc SET a = 'x' || a WHERE id = 4",
        )
        wait_count(log, topic, 3 + 5)
        merge(log, topic, sink, batch=3)
    types = dict(
        query(
            log.dsn,
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'crm' AND table_name = 'sc' AND column_name !~ '^_hw_'",
        )
    )
    assert types == {
        "id": "bigint", "a": "text", "b": "text", "gone": "text", "c": "jsonb", "name": "text",
    }  # fmt: skip
    got = rows(log.dsn, "crm.sc", "id, a, b, gone, c, name")
    assert got == [
        # Rows not changed since a change keep their old values; new versions carry
        # NULL in columns the source no longer sends (renamed b, dropped gone).
        (1, "1", None, "g1", {"d": 1}, "uno"),  # updated before the DROP
        (2, "20", None, None, {"d": 1}, "two"),
        (3, "3", "t", "g3", None, None),
        (4, "x4", None, None, {"d": 1}, "four"),
        (5, "five", None, None, {"d": 1}, "cinq"),
    ]
    # Every column the source still has matches it for the rows changed after the ALTERs.
    assert rows(log.dsn, "crm.sc", "id, a, name, c")[3:] == rows(src, "sc", "id, a, name, c")[3:]


def test_bad_envelopes_go_to_the_dlq_and_the_rest_applies(log: PostgresLog) -> None:
    log.create_topic(TopicSpec("crm.public.t", 2))

    def ev(op: str, before: Any, after: Any) -> bytes:
        return json.dumps({"op": op, "before": before, "after": after, "source": {}}).encode()

    h = {"position": "0/20"}
    log.append(
        "crm.public.t",
        [
            Record(b'{"id":1}', ev("c", None, {"id": 1, "v": "a"}), h),
            Record(b'{"id":2}', b"{not json", h),
            Record(b'{"id":3}', ev("x", None, {"id": 3}), h),
            Record(b'{"id":4}', ev("c", None, None), h),
            Record(None, ev("d", None, None), h),
            Record(b'{"id":5}', ev("c", None, {"v": "no key"}), h),
            Record(b'{"id":6}', ev("c", None, {"id": 6, "v": "b"}), {"position": "garbage"}),
            Record(b'{"id":1}', ev("u", None, {"id": 1, "v": "a2"}), h),
            Record(b'{"id":7}', ev("c", None, {"id": 7, "v": "c"}), h),
            Record(b'{"id":7}', None, h),  # tombstone: ignored
        ],
    )
    stats = merge(log, "crm.public.t", ReplicaSink("crm", "t"), batch=100)
    assert stats.dead_letters == 6
    assert rows(log.dsn, "crm.t", "id, v") == [(1, "a2"), (7, "c")]
    dead = log.read(dlq_topic("replica-t"), 0, 0)
    errors = {d.key: d.headers["error"] for d in dead}
    assert "not JSON" in errors[b'{"id":2}'] and "unknown op 'x'" in errors[b'{"id":3}']
    assert "without an 'after'" in errors[b'{"id":4}'] and "delete without a key" in errors[None]
    assert "key column 'id'" in errors[b'{"id":5}'] and "garbage" in errors[b'{"id":6}']
    assert all(d.headers["error_type"] == "ProcessingError" for d in dead)


def test_values_that_outgrow_their_column_widen_it(log: PostgresLog) -> None:
    """A type change at the source shows as values of another JSON type."""
    log.create_topic(TopicSpec("in", 1))

    def rec(i: int, v: Any, pos: int) -> Record:
        body = {"op": "u", "before": None, "after": {"id": i, "v": v}, "source": {"lsn": pos}}
        return Record(json.dumps({"id": i}).encode(), json.dumps(body).encode())

    log.append("in", [rec(1, 1, 10), rec(2, None, 11)])
    sink = ReplicaSink("w", "t")
    merge(log, "in", sink)
    log.append("in", [rec(2, 2.5, 12)])
    merge(log, "in", sink)
    log.append("in", [rec(3, {"k": [1]}, 13), rec(4, True, 14)])
    merge(log, "in", sink)
    assert query(
        log.dsn,
        "SELECT data_type FROM information_schema.columns WHERE table_name = 't'"
        " AND column_name = 'v'",
    ) == [("jsonb",)]
    assert rows(log.dsn, "w.t", "id, v, _hw_position, _hw_position_key") == [
        (1, 1, "10", 10),
        (2, 2.5, "12", 12),
        (3, {"k": [1]}, "13", 13),
        (4, True, "14", 14),
    ]


def test_key_change_loses_unsent_toast_value(src: str, log: PostgresLog) -> None:
    """Known gap (module doc): a key change that leaves a TOASTed value unchanged is
    sent as ``c`` under the new key without that value (REPLICA IDENTITY DEFAULT), and
    the old row may already be deleted (its ``d`` is in another partition): the
    replica's column is NULL until the row's next change sets it."""
    _customers(src)
    topic = "crm.public.customers"
    with running(PostgresSource("crm", src, ["customers"], log)):
        wait_snapshot(log, "crm")
        sql(src, "UPDATE customers SET id = 500 WHERE id = 1")
        wait_count(log, topic, 22)
        merge(log, topic, ReplicaSink("crm", "customers"))
    ((notes,),) = query(log.dsn, "SELECT notes FROM crm.customers WHERE id = 500")
    assert notes is None and query(
        src, "SELECT notes IS NOT NULL FROM customers WHERE id = 500"
    ) == [(True,)]
    assert rows(log.dsn, "crm.customers", "id, name, score") == rows(
        src, "customers", "id, name, score"
    )


# -- MySQL/MariaDB source ---------------------------------------------------------------


@pytest.fixture
def my_env(mariadb_server: MariaDB, pg_server: EmbeddedPostgres) -> Iterator[Env]:
    e = Env(mariadb_server, new_database(pg_server))
    try:
        yield e
    finally:
        e.close()


def test_replica_of_a_mariadb_table(my_env: Env) -> None:
    env = my_env
    env.sql(
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(50), score INT, ratio DOUBLE)",
        "INSERT INTO customers VALUES (1, 'ada', 10, 0.5), (2, 'bob', 20, NULL),"
        " (3, 'cy', 30, 1.25)",
    )
    src = env.source(["customers"])
    src.start()
    env.sql(
        "INSERT INTO customers VALUES (4, 'dee', 40, 2)",
        "UPDATE customers SET score = 11 WHERE id = 1",
        "DELETE FROM customers WHERE id = 2",
        "UPDATE customers SET id = 40 WHERE id = 4",  # key change
        "ALTER TABLE customers ADD COLUMN note VARCHAR(20)",
        "INSERT INTO customers VALUES (5, 'eve', 50, 0, 'new col')",
    )
    src.catch_up()
    topic = f"crm.{env.db}.customers"
    sink = ReplicaSink("crm", "customers")
    merge(env.log, topic, sink, batch=3)
    want = env.sql("SELECT id, name, score, ratio, note FROM customers ORDER BY id")
    got = rows(env.dsn, "crm.customers", "id, name, score, ratio, note")
    assert [tuple(r) for r in want] == got
    assert [r[0] for r in got] == [1, 3, 5, 40] and got[2][4] == "new col"
    positions = [p for (p,) in query(env.dsn, "SELECT _hw_position FROM crm.customers")]
    assert all(":" in p for p in positions)
