from __future__ import annotations

import itertools
import random
import threading
import time

import psycopg
import pytest

from headwater.errors import FencedError, TopicMismatch, TopicNotFound
from headwater.log.base import Record, TopicSpec
from headwater.log.partitioner import murmur2, murmur2_many, partition_for, partitions_for
from headwater.log.postgres import PostgresLog

from .conftest import query


@pytest.fixture
def log(dsn: str) -> PostgresLog:
    lg = PostgresLog(dsn)
    yield lg  # type: ignore[misc]
    lg.close()


def test_murmur2_matches_kafka_vectors() -> None:
    # From Kafka's UtilsTest: the Java client's partitioner must agree with ours.
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"a-little-bit-longer-string") == -1486304829


def test_batch_partitioning_equals_the_scalar_murmur2() -> None:
    rnd = random.Random(7)
    keys = [b"", b"21", b"foobar", b"a-little-bit-longer-string"] + [
        rnd.randbytes(rnd.randrange(0, 40)) for _ in range(2000)
    ]
    assert murmur2_many(keys).tolist() == [murmur2(k) & 0xFFFFFFFF for k in keys]
    assert partitions_for(keys, 7, itertools.count()) == [partition_for(k, 7) for k in keys]
    mixed = [b"k1", None, b"k2", None] * 10  # keyless records go round-robin, in order
    rr = itertools.count()
    want = [partition_for(k, 3) if k else next(rr) % 3 for k in mixed]
    assert partitions_for(mixed, 3, itertools.count()) == want
    assert want[1::2] == [i % 3 for i in range(20)]


def test_topics_are_idempotent_and_partition_count_is_fixed(log: PostgresLog) -> None:
    log.create_topic(TopicSpec("orders", 3))
    log.create_topic(TopicSpec("orders", 3, retention_ms=1000))
    assert [t.name for t in log.topics()] == ["orders"]
    assert log.topics()[0].retention_ms == 1000
    with pytest.raises(TopicMismatch, match="exists with 3 partitions"):
        log.create_topic(TopicSpec("orders", 4))
    with pytest.raises(TopicNotFound):
        log.append("nope", [Record(b"k", b"v")])


def test_append_returns_offsets_in_input_order_partitioned_by_key(log: PostgresLog) -> None:
    log.create_topic(TopicSpec("t", 3))
    recs = [Record(f"k{i % 7}".encode(), f"v{i}".encode(), {"i": str(i)}) for i in range(50)]
    placed = log.append("t", recs)
    assert len(placed) == 50
    for r, (p, _) in zip(recs, placed, strict=True):
        assert r.key is not None and p == partition_for(r.key, 3)
    for p in range(3):
        offs = [o for q, o in placed if q == p]
        assert offs == list(range(len(offs)))  # dense, in input order
        back = log.read("t", p, 0, 100)
        assert [r.offset for r in back] == offs
    again = log.append("t", [recs[0]])
    p0 = placed[0][0]
    assert again == [(p0, len([1 for q, _ in placed if q == p0]))]
    r0 = log.read("t", p0, 0, 1)[0]
    assert (r0.key, r0.value, dict(r0.headers)) == (b"k0", b"v0", {"i": "0"})


def test_tombstones_and_keyless_records(log: PostgresLog) -> None:
    log.create_topic(TopicSpec("t", 2))
    placed = log.append("t", [Record(b"a", None), Record(None, b"x"), Record(None, b"y")])
    assert {p for p, _ in placed[1:]} == {0, 1}  # keyless: round-robin
    p, o = placed[0]
    assert log.read("t", p, o, 1)[0].value is None


def test_append_joins_the_callers_transaction(log: PostgresLog, dsn: str) -> None:
    log.create_topic(TopicSpec("t", 1))
    with psycopg.connect(dsn) as conn:
        log.append("t", [Record(b"a", b"1")], conn=conn)
        conn.rollback()
    assert log.partitions("t")[0].end_offset == 0
    assert log.read("t", 0, 0) == []
    with psycopg.connect(dsn) as conn:
        log.append("t", [Record(b"a", b"2")], conn=conn)
        conn.commit()
    assert [r.value for r in log.read("t", 0, 0)] == [b"2"]


def test_concurrent_writers_keep_partition_order_without_gaps(log: PostgresLog, dsn: str) -> None:
    """Readers following the log while 4 writers append never see a gap that fills
    later: offsets become visible in order."""
    log.create_topic(TopicSpec("t", 1))
    writers, batches, per = 4, 40, 25
    done = threading.Event()
    seen: list[int] = []
    gaps: list[tuple[int, int]] = []

    def follow() -> None:
        rl = PostgresLog(dsn)
        nxt = 0
        while True:
            finished = done.is_set()
            for r in rl.read("t", 0, nxt, 10_000):
                if r.offset != nxt:
                    gaps.append((nxt, r.offset))
                seen.append(r.offset)
                nxt = r.offset + 1
            if finished and nxt == writers * batches * per:
                break
        rl.close()

    def write(w: int) -> None:
        wl = PostgresLog(dsn)
        for b in range(batches):
            wl.append("t", [Record(b"k", f"{w}:{b}:{i}".encode()) for i in range(per)])
        wl.close()

    reader = threading.Thread(target=follow)
    reader.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join(timeout=60)
    assert gaps == []
    assert seen == list(range(writers * batches * per))
    # each writer's records keep their order
    values = [r.value.decode() for r in log.read("t", 0, 0, 10_000) if r.value]
    for w in range(writers):
        mine = [tuple(map(int, v.split(":")[1:])) for v in values if v.startswith(f"{w}:")]
        assert mine == sorted(mine)


def test_reader_commit_is_transactional_and_fenced(log: PostgresLog, dsn: str) -> None:
    log.create_topic(TopicSpec("t", 2))
    log.append("t", [Record(f"k{i}".encode(), b"v") for i in range(20)])
    reader = log.reader("g", "t")
    with psycopg.connect(dsn) as conn:
        batch = reader.next_batch(conn, 100, 0)
        assert batch is not None and len(batch.records) == 20
        reader.commit(conn, batch)
        conn.rollback()  # the sink failed: offsets must not move
        assert log.committed("g", "t") == {0: 0, 1: 0}
        batch = reader.next_batch(conn, 100, 0)
        assert batch is not None and len(batch.records) == 20
        reader.commit(conn, batch)
        conn.commit()
    assert sum(log.committed("g", "t").values()) == 20
    # A batch whose start offsets are stale (another worker moved them) is fenced.
    stale = batch
    with psycopg.connect(dsn) as conn, pytest.raises(FencedError):
        reader.commit(conn, stale)
    reader.close()


def test_an_append_wakes_a_reader_waiting_on_an_idle_topic(log: PostgresLog, dsn: str) -> None:
    """An idle reader waits for the append's notification instead of polling: the
    commit ends its wait at once, well before the 0.2 s after which it reads anyway."""
    log.create_topic(TopicSpec("t", 2))
    reader = log.reader("g", "t")
    with psycopg.connect(dsn) as conn:
        t0 = time.monotonic()
        assert reader.next_batch(conn, 100, 0) is None
        assert time.monotonic() - t0 >= 0.19  # nothing came: it waited, no busy loop
        conn.rollback()

        appended: list[float] = []

        def append_soon() -> None:
            writer = PostgresLog(dsn)
            time.sleep(0.05)
            writer.append("t", [Record(b"k", b"v")])
            appended.append(time.monotonic())
            writer.close()

        th = threading.Thread(target=append_soon)
        th.start()
        batch = reader.next_batch(conn, 100, 0)
        woke = time.monotonic()
        th.join()
        conn.rollback()
    reader.close()
    assert batch is not None and [r.value for r in batch.records] == [b"v"]
    assert woke - appended[0] < 0.1, f"woke {woke - appended[0]:.3f} s after the append"


def test_two_members_of_a_group_split_partitions(log: PostgresLog, dsn: str) -> None:
    log.create_topic(TopicSpec("t", 4))
    a, b = log.reader("g", "t"), log.reader("g", "t")
    time.sleep(0.6)  # membership refresh
    pa, pb = set(a.assigned()), set(b.assigned())
    assert pa and pb and not (pa & pb) and pa | pb == {0, 1, 2, 3}
    b.close()
    time.sleep(0.6)
    assert set(a.assigned()) == {0, 1, 2, 3}  # a dead member's partitions move at once
    a.close()


def test_retention_by_time_and_size(log: PostgresLog) -> None:
    log.create_topic(TopicSpec("old", 1, retention_ms=60_000))
    now = int(time.time() * 1000)
    log.append("old", [Record(b"k", b"x", timestamp_ms=now - 120_000) for _ in range(5)])
    log.append("old", [Record(b"k", b"y", timestamp_ms=now) for _ in range(3)])
    log.create_topic(TopicSpec("big", 1, retention_bytes=100))
    for _ in range(10):  # ten segments of 54 bytes (24-byte frame + 30-byte value)
        log.append("big", [Record(None, b"z" * 30)])
    report = log.enforce_retention()
    assert report.deleted == 5 + 8
    assert [r.value for r in log.read("old", 0, 0)] == [b"y"] * 3
    assert log.partitions("old")[0].start_offset == 5
    assert [r.offset for r in log.read("big", 0, 0)] == [8, 9]


def test_compaction_keeps_latest_per_key_and_drops_old_tombstones(
    log: PostgresLog, dsn: str
) -> None:
    log.create_topic(TopicSpec("c", 1, compacted=True, retention_ms=60_000))
    now = int(time.time() * 1000)
    log.append("c", [Record(b"a", b"1"), Record(b"b", b"1"), Record(b"a", b"2")])
    log.append("c", [Record(b"b", None, timestamp_ms=now - 120_000)])  # old tombstone
    log.append("c", [Record(b"d", b"1"), Record(b"d", None)])  # fresh tombstone
    log.enforce_retention()
    rows = [(r.key, r.value) for r in log.read("c", 0, 0)]
    assert rows == [(b"a", b"2"), (b"d", None)]
    assert query(dsn, "SELECT count(*) FROM headwater.topics WHERE compacted")[0][0] == 1
