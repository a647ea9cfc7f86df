"""KafkaLog against a real tansu broker, with offsets in a real embedded PostgreSQL."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from headwater.config.model import KafkaConfig
from headwater.errors import FencedError, LogError, TopicMismatch, TopicNotFound
from headwater.log.base import Batch, Record, TopicSpec
from headwater.log.kafka import KafkaBatchReader, KafkaLog
from headwater.log.partitioner import partition_for

pytestmark = pytest.mark.kafka

# tansu holds a JoinGroup for half the group's session timeout: keep it short here.
FAST_GROUPS = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 500}


@pytest.fixture(scope="module")
def klog(kafka_bootstrap: str, offsets_dsn: str) -> Iterator[KafkaLog]:
    log = KafkaLog(
        KafkaConfig(bootstrap_servers=kafka_bootstrap, client_id="hw-test", replication_factor=1),
        offsets_dsn,
        consumer_config=FAST_GROUPS,
    )
    yield log
    log.close()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _topic(klog: KafkaLog, prefix: str, partitions: int = 3) -> str:
    name = _name(prefix)
    klog.create_topic(TopicSpec(name, partitions=partitions))
    return name


def _take(reader: KafkaBatchReader, conn: psycopg.Connection, n: int) -> list[Batch]:
    """Batches until ``n`` records arrived (the first may wait for the group to form)."""
    batches: list[Batch] = []
    got = 0
    deadline = time.monotonic() + 20
    while got < n:
        assert time.monotonic() < deadline, f"only {got} of {n} records arrived"
        batch = reader.next_batch(conn, n - got, 300)
        if batch is not None:
            batches.append(batch)
            got += len(batch.records)
    return batches


def _commit(reader: KafkaBatchReader, conn: psycopg.Connection, batches: list[Batch]) -> None:
    with conn.transaction():
        for b in batches:
            reader.commit(conn, b, {p: f"pos-{p}" for p in b.start_offsets})
    for b in batches:
        reader.after_commit(b)


def _keys(batches: list[Batch]) -> list[tuple[int, int]]:
    return sorted((r.partition, r.offset) for b in batches for r in b.records)


def test_create_topic_is_idempotent_and_checks_partitions(klog: KafkaLog) -> None:
    name = _name("create")
    klog.create_topic(TopicSpec(name, partitions=3))
    klog.create_topic(TopicSpec(name, partitions=3))  # again: no error
    assert [p.partition for p in klog.partitions(name)] == [0, 1, 2]
    with pytest.raises(TopicMismatch, match="3 partitions"):
        klog.create_topic(TopicSpec(name, partitions=5))

    compacted = _name("compact")
    klog.create_topic(TopicSpec(compacted, partitions=2, compacted=True, retention_ms=60_000))
    specs = {t.name: t for t in klog.topics()}
    assert specs[name].partitions == 3 and not specs[name].compacted
    assert specs[compacted].partitions == 2 and specs[compacted].compacted
    with pytest.raises(TopicNotFound):
        klog.partitions(_name("missing"))


def test_append_partitions_by_key_and_reads_back(klog: KafkaLog) -> None:
    topic = _topic(klog, "append")
    records = [
        Record(f"user-{i}".encode(), f"v{i}".encode(), {"n": str(i)}, 1_700_000_000_000 + i)
        for i in range(60)
    ]
    records += [Record(None, b"keyless-%d" % i) for i in range(6)]
    records.append(Record(b"user-1", None))  # tombstone
    placed = klog.append(topic, records)

    assert len(placed) == len(records)
    for rec, (p, _) in zip(records, placed, strict=True):
        if rec.key is not None:
            assert p == partition_for(rec.key, 3)
    assert sorted(p for (p, _) in placed[60:66]) == [0, 0, 1, 1, 2, 2]  # round robin
    per_partition: dict[int, list[int]] = {}
    for p, off in placed:
        per_partition.setdefault(p, []).append(off)
    for offs in per_partition.values():  # dense, in input order
        assert offs == list(range(len(offs)))

    ends = {i.partition: i.end_offset for i in klog.partitions(topic)}
    assert ends == {p: len(offs) for p, offs in per_partition.items()}

    by_place = dict(zip(placed, records, strict=True))
    for p in range(3):
        got = klog.read(topic, p, 0, 1000)
        assert [r.offset for r in got] == per_partition[p]
        for r in got:
            want = by_place[(p, r.offset)]
            assert (r.key, r.value, dict(r.headers)) == (want.key, want.value, dict(want.headers))
            if want.timestamp_ms is not None:
                assert r.timestamp_ms == want.timestamp_ms
    tail = klog.read(topic, 0, 2, max_records=3)
    assert [r.offset for r in tail] == per_partition[0][2:5]

    with pytest.raises(LogError, match="PostgreSQL transaction"):
        klog.append(topic, records[:1], conn=object())  # type: ignore[arg-type]
    with pytest.raises(TopicNotFound):
        klog.append(_name("missing"), records[:1])


def test_reader_commits_continues_and_rewinds_on_rollback(
    klog: KafkaLog,
    offsets_dsn: str,
) -> None:
    topic = _topic(klog, "reader")
    group = _name("g")
    placed = klog.append(topic, [Record(b"k%d" % i, b"v%d" % i) for i in range(30)])
    reader = klog.reader(group, topic)
    try:
        with psycopg.connect(offsets_dsn) as conn:
            first = _take(reader, conn, 12)
            assert all(s == 0 for b in first for s in b.start_offsets.values())
            _commit(reader, conn, first)
            committed = klog.committed(group, topic)
            ends: dict[int, int] = {}
            for p, off in _keys(first):
                ends[p] = off + 1
            assert committed == ends
            row = conn.execute(
                "SELECT position FROM headwater.consumer_offsets WHERE group_name = %s LIMIT 1",
                (group,),
            ).fetchone()
            assert row is not None and row[0].startswith("pos-")
            conn.commit()

            rest = _take(reader, conn, 18)  # continues after the committed offsets
            assert set(_keys(first)).isdisjoint(_keys(rest))
            assert sorted(_keys(first) + _keys(rest)) == sorted(placed)
            for b in rest:
                for p, start in b.start_offsets.items():
                    assert start >= committed.get(p, 0)

            conn.rollback()  # the sink failed: nothing moves, the batch comes again
            reader.after_rollback()
            assert klog.committed(group, topic) == committed
            again = _take(reader, conn, 18)
            assert _keys(again) == _keys(rest)
            _commit(reader, conn, again)
            assert klog.committed(group, topic) == {
                p: max(o for q, o in placed if q == p) + 1 for p in range(3)
            }
            assert reader.next_batch(conn, 10, 200) is None  # nothing left
    finally:
        reader.close()


def test_commit_is_fenced_when_stored_offsets_moved(
    klog: KafkaLog,
    offsets_dsn: str,
) -> None:
    topic = _topic(klog, "fence")
    group = _name("g")
    placed = klog.append(topic, [Record(b"k%d" % i, b"v%d" % i) for i in range(30)])
    reader = klog.reader(group, topic)
    try:
        with psycopg.connect(offsets_dsn) as conn:
            batches = _take(reader, conn, 30)
            conn.commit()
            # Another worker took over and committed 2 records per partition.
            with psycopg.connect(offsets_dsn) as other:
                other.execute(
                    "INSERT INTO headwater.consumer_offsets (group_name, topic, partition,"
                    " next_offset) SELECT %s, %s, p, 2 FROM generate_series(0, 2) p",
                    (group, topic),
                )
            with pytest.raises(FencedError, match="another worker"), conn.transaction():
                for b in batches:
                    reader.commit(conn, b)
            reader.after_rollback()
            assert klog.committed(group, topic) == {0: 2, 1: 2, 2: 2}
            again = _take(reader, conn, 30 - 6)  # resumes where the other worker left
            assert _keys(again) == sorted(x for x in placed if x[1] >= 2)
    finally:
        reader.close()


def test_two_readers_of_one_group_share_partitions(
    klog: KafkaLog,
    offsets_dsn: str,
) -> None:
    topic = _topic(klog, "share")
    group = _name("g")
    readers = [klog.reader(group, topic), klog.reader(group, topic)]
    total = 60
    done = threading.Event()
    committed: list[list[tuple[int, int]]] = [[], []]
    owned: list[set[int]] = [set(), set()]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        reader = readers[i]
        try:
            with psycopg.connect(offsets_dsn) as conn:
                while not done.is_set():
                    owned[i].update(reader.assignment)
                    batch = reader.next_batch(conn, 50, 200)
                    if batch is None:
                        conn.rollback()
                        continue
                    try:
                        with conn.transaction():
                            reader.commit(conn, batch)
                    except FencedError:
                        reader.after_rollback()
                        continue
                    reader.after_commit(batch)
                    committed[i].extend((r.partition, r.offset) for r in batch.records)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while not (
            readers[0].assignment
            and readers[1].assignment
            and sorted(readers[0].assignment + readers[1].assignment) == [0, 1, 2]
        ):
            assert not errors, errors
            assert time.monotonic() < deadline, "the group never split the partitions"
            time.sleep(0.1)
        placed = klog.append(topic, [Record(b"key-%d" % i, b"v") for i in range(total)])
        while len(committed[0]) + len(committed[1]) < total and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        done.set()
        for t in threads:
            t.join(10)
        for r in readers:
            r.close()
    assert not errors, errors
    assert sorted(committed[0] + committed[1]) == sorted(placed)  # each exactly once
    assert committed[0] and committed[1]
    assert {p for p, _ in committed[0]}.isdisjoint({p for p, _ in committed[1]})
    assert owned[0] and owned[1]


def test_new_reader_starts_at_offsets_stored_in_postgres(
    klog: KafkaLog,
    offsets_dsn: str,
) -> None:
    topic = _topic(klog, "resume")
    group = _name("g")
    placed = klog.append(topic, [Record(b"k%d" % i, b"v%d" % i) for i in range(30)])
    stored = {0: 3, 1: 4}  # partition 2 never committed: starts at the beginning
    with psycopg.connect(offsets_dsn) as conn:
        for p, off in stored.items():
            conn.execute(
                "INSERT INTO headwater.consumer_offsets (group_name, topic, partition,"
                " next_offset) VALUES (%s, %s, %s, %s)",
                (group, topic, p, off),
            )
    expected = sorted(x for x in placed if x[1] >= stored.get(x[0], 0))
    reader = klog.reader(group, topic)
    try:
        with psycopg.connect(offsets_dsn) as conn:
            batches = _take(reader, conn, len(expected))
            assert _keys(batches) == expected
            assert batches[0].start_offsets == {
                p: stored.get(p, 0) for p in batches[0].start_offsets
            }
            _commit(reader, conn, batches)  # not fenced: it started where PG said
    finally:
        reader.close()
    assert klog.committed(group, topic) == {
        p: max(o for q, o in placed if q == p) + 1 for p in range(3)
    }


def test_module_imports_without_confluent_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    from headwater.errors import MissingDependency

    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # makes the import fail
    with pytest.raises(MissingDependency, match=r"pip install 'headwater\[kafka\]'"):
        KafkaLog(KafkaConfig(replication_factor=1), "postgresql://unused@/x")
