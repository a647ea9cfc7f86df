from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence

import pytest

from headwater.engine.processor import Processor
from headwater.engine.worker import Worker, WorkerOptions
from headwater.log.base import Conn, LogRecord, Record, TopicSpec, dlq_topic
from headwater.log.postgres import PostgresLog
from headwater.sinks.table import TableSink

from .conftest import query
from .procs import FlakyOnce


@pytest.fixture
def log(dsn: str) -> PostgresLog:
    lg = PostgresLog(dsn)
    yield lg  # type: ignore[misc]
    lg.close()


def _worker(log: PostgresLog, dsn: str, processor: object, topic: str = "in", **kw: int) -> Worker:
    return Worker(
        pipeline="p",
        topic=topic,
        processor=processor,
        log=log,
        dsn=dsn,  # type: ignore[arg-type]
        options=WorkerOptions(
            batch_max_events=kw.get("batch", 100), batch_max_ms=0, retry_initial_ms=10
        ),
    )


def test_poison_record_goes_to_dlq_and_pipeline_keeps_going(log: PostgresLog, dsn: str) -> None:
    log.create_topic(TopicSpec("in", 1))
    log.create_topic(TopicSpec(dlq_topic("p"), 1))
    good = [Record(f"k{i}".encode(), json.dumps({"i": i}).encode()) for i in range(250)]
    poison = Record(b"bad", b"{not json", {"trace": "abc"})
    log.append("in", [*good[:137], poison, *good[137:]])
    stats = _worker(log, dsn, TableSink("copy")).run(until_idle=True)
    assert stats.events == 251 and stats.dead_letters == 1
    rows = query(dsn, "SELECT key, (value->>'i')::int FROM copy ORDER BY 2")
    assert rows == [(f"k{i}", i) for i in range(250)]
    (dead,) = log.read(dlq_topic("p"), 0, 0)
    assert dead.key == b"bad" and dead.value == b"{not json"
    h = dead.headers
    assert h["origin_topic"] == "in" and h["origin_partition"] == "0"
    assert h["origin_offset"] == "137" and h["pipeline"] == "p" and h["trace"] == "abc"
    assert "invalid input syntax for type json" in h["error"]
    assert h["error_type"] == "InvalidTextRepresentation"
    assert query(dsn, "SELECT dead_letters, events FROM headwater.pipeline_stats") == [(1, 251)]


def test_transient_failure_is_retried_without_duplicates(log: PostgresLog, dsn: str) -> None:
    log.create_topic(TopicSpec("in", 1))
    log.append("in", [Record(f"k{i}".encode(), b"1") for i in range(30)])
    proc = FlakyOnce()
    stats = _worker(log, dsn, proc).run(until_idle=True)
    assert stats.retries == 1 and proc.calls == 2
    assert query(dsn, "SELECT count(*), count(DISTINCT key) FROM flaky") == [(30, 30)]
    assert log.committed("p", "in") == {0: 30}


def test_upsert_mode_applies_latest_value_and_tombstones(log: PostgresLog, dsn: str) -> None:
    log.create_topic(TopicSpec("in", 3))
    log.append(
        "in",
        [
            Record(b"a", b'{"v":1}'),
            Record(b"b", b'{"v":1}'),
            Record(b"a", b'{"v":2}'),
            Record(b"c", b'{"v":1}'),
        ],
    )
    _worker(log, dsn, TableSink("latest", "upsert"), batch=2).run(until_idle=True)
    log.append(
        "in",
        [
            Record(b"b", None),
            Record(b"c", b'{"v":3}'),
            Record(b"b", b'{"v":9}'),
            Record(b"c", None),
        ],
    )
    _worker(log, dsn, TableSink("latest", "upsert")).run(until_idle=True)
    rows = query(dsn, "SELECT key, (value->>'v')::int FROM latest ORDER BY key")
    assert rows == [("a", 2), ("b", 9)]


def test_watermark_is_the_last_applied_position(log: PostgresLog, dsn: str) -> None:
    log.create_topic(TopicSpec("in", 1))
    log.append("in", [Record(b"k", b"{}", {"position": f"0/{i:X}"}) for i in range(1, 11)])
    _worker(log, dsn, TableSink("copy")).run(until_idle=True)
    assert query(dsn, "SELECT position FROM headwater.consumer_offsets") == [("0/A",)]


class _CheckThenCreate(Processor):
    """A setup that races when two run at once: look, wait, create (no IF NOT EXISTS)."""

    def setup(self, conn: Conn) -> None:
        exists = conn.execute("SELECT to_regclass('raced') IS NOT NULL").fetchone()
        time.sleep(0.3)
        if not (exists and exists[0]):
            conn.execute("CREATE TABLE raced (k text)")

    def process(self, conn: Conn, records: Sequence[LogRecord]) -> None:
        pass


def test_setups_of_one_pipeline_run_one_at_a_time(dsn: str) -> None:
    PostgresLog(dsn).create_topic(TopicSpec("in", 2))
    errors: list[BaseException] = []

    def start() -> None:
        lg = PostgresLog(dsn)
        try:
            _worker(lg, dsn, _CheckThenCreate()).run(max_batches=0)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            lg.close()

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert query(dsn, "SELECT count(*) FROM pg_class WHERE relname = 'raced'") == [(1,)]
