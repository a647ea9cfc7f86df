"""Crash safety: SIGKILL a worker at random moments; the sink must equal the input."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from headwater.log.base import Record, TopicSpec
from headwater.log.postgres import PostgresLog

from .conftest import query

N_EVENTS = 100_000
N_KILLS = 20


def _config(tmp_path: Path, dsn: str, log_section: str = "") -> Path:
    cfg = tmp_path / "headwater.toml"
    cfg.write_text(
        f'[storage]\npostgres = "{dsn}"\n{log_section}\n'
        "[worker]\nbatch_max_events = 500\nbatch_max_ms = 20\nretry_initial_ms = 50\n"
        '[[topics]]\nname = "events"\npartitions = 3\n'
        '[[pipelines]]\nname = "copy"\ninput = "events"\nprocessor = "table"\n'
        'table = "copied"\nmode = "append"\n'
    )
    return cfg


def _start_worker(cfg: Path, pipeline: str = "copy") -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "headwater", "worker", "--config", str(cfg), "--pipeline", pipeline],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _events() -> list[Record]:
    return [
        Record(f"key-{i % 997}".encode(), json.dumps({"seq": i}).encode()) for i in range(N_EVENTS)
    ]


def crash_and_verify(
    cfg: Path,
    dsn: str,
    append: object,
    committed: object,
    run_s: tuple[float, float] = (0.0, 0.3),
    pipeline: str = "copy",
) -> None:
    from headwater.config import load_settings
    from headwater.engine.runtime import bootstrap

    bootstrap(load_settings(cfg)).close()
    events = _events()
    half = N_EVENTS // 2
    append(events[:half])  # type: ignore[operator]
    # The other half arrives in slices, one appended during each run: however fast the
    # worker copies, there is always more to copy, so the kills land mid-stream.
    step = -(-(N_EVENTS - half) // N_KILLS)
    rng = random.Random(7)
    mid_stream = 0
    for k in range(N_KILLS):
        start = half + k * step
        producer = threading.Thread(target=append, args=(events[start : start + step],))
        producer.start()
        proc = _start_worker(cfg, pipeline)
        # Kill at a random moment once this run is copying (a group join can take
        # seconds on Kafka), so the kills land mid-stream, mid-batch or mid-commit.
        before, deadline = _count(dsn), time.monotonic() + 60
        while _count(dsn) == before and before < N_EVENTS and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(*run_s))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        producer.join()
        mid_stream += 0 < _count(dsn) < N_EVENTS
    assert mid_stream >= 5, "kills should land while the worker is copying"
    # Final run to completion, then a graceful stop.
    proc = _start_worker(cfg, pipeline)
    deadline = time.monotonic() + 180
    while sum(committed().values()) < N_EVENTS:  # type: ignore[operator]
        assert time.monotonic() < deadline, "worker did not catch up"
        assert proc.poll() is None, "worker died"
        time.sleep(0.2)
    while not _group_members(dsn, pipeline):  # joined its group: signal handlers are in place
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    total, distinct = query(
        dsn, 'SELECT count(*), count(DISTINCT (partition, "offset")) FROM copied'
    )[0]
    assert (total, distinct) == (N_EVENTS, N_EVENTS)  # 0 lost, 0 duplicated
    rows = query(dsn, "SELECT key, (value->>'seq')::int FROM copied")
    assert sorted(rows, key=lambda r: r[1]) == [(f"key-{i % 997}", i) for i in range(N_EVENTS)]


def _group_members(dsn: str, pipeline: str) -> int:
    sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    return int(query(dsn, sql, (f"headwater-worker:{pipeline}",))[0][0])


def _count(dsn: str) -> int:
    return int(query(dsn, "SELECT count(*) FROM copied")[0][0]) if _has_table(dsn) else 0


def _has_table(dsn: str) -> bool:
    return bool(query(dsn, "SELECT to_regclass('public.copied') IS NOT NULL")[0][0])


@pytest.mark.slow
def test_sigkill_postgres_backend_loses_and_duplicates_nothing(tmp_path: Path, dsn: str) -> None:
    cfg = _config(tmp_path, dsn)
    log = PostgresLog(dsn)
    log.create_topic(TopicSpec("events", 3))
    lock = threading.Lock()

    def append(batch: list[Record]) -> None:
        with lock:
            log.append("events", batch)

    def committed() -> dict[int, int]:
        return PostgresLog(dsn).committed("copy", "events")

    crash_and_verify(cfg, dsn, append, committed)


@pytest.mark.slow
@pytest.mark.kafka
def test_sigkill_kafka_backend_loses_and_duplicates_nothing(
    tmp_path: Path, dsn: str, kafka_bootstrap: str
) -> None:
    from headwater.config import load_settings
    from headwater.log.kafka import KafkaLog

    topic_suffix = os.urandom(3).hex()
    cfg = _config(
        tmp_path,
        dsn,
        f'log = "kafka"\n[storage.kafka]\nbootstrap_servers = "{kafka_bootstrap}"\n'
        "session_timeout_ms = 2000\nheartbeat_interval_ms = 500\n",
    )
    cfg.write_text(
        cfg.read_text()
        .replace('"events"', f'"events-{topic_suffix}"')
        .replace('name = "copy"', f'name = "copy-{topic_suffix}"')
    )
    settings = load_settings(cfg)
    klog = KafkaLog(settings.storage.kafka, dsn)
    topic, group = f"events-{topic_suffix}", f"copy-{topic_suffix}"
    klog.create_topic(TopicSpec(topic, 3))
    lock = threading.Lock()

    def append(batch: list[Record]) -> None:
        with lock:
            klog.append(topic, batch)

    def committed() -> dict[int, int]:
        return klog.committed(group, topic)

    crash_and_verify(cfg, dsn, append, committed, pipeline=group)
    klog.close()


@pytest.mark.slow
def test_per_key_order_with_two_workers_across_three_partitions(dsn: str) -> None:
    from .procs import run_order_worker

    log = PostgresLog(dsn)
    log.create_topic(TopicSpec("versions", 3))
    keys = [f"k{i}" for i in range(30)]
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=run_order_worker, args=(dsn, 40.0)) for _ in range(2)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 60
    members = (  # each reader holds a two-key advisory lock: its membership slot
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND objsubid = 2 AND database = (SELECT oid FROM pg_database"
        " WHERE datname = current_database())"
    )
    while query(dsn, members)[0][0] < 2:  # both joined the group
        assert all(w.is_alive() for w in workers), "a worker died before joining"
        assert time.monotonic() < deadline, "the workers did not join"
        time.sleep(0.05)
    time.sleep(1.5)  # membership refresh (every 0.5 s): partitions spread over both
    for v0 in range(0, 1000, 100):  # appended while both workers consume
        log.append(
            "versions",
            [Record(k.encode(), str(v).encode()) for v in range(v0, v0 + 100) for k in keys],
        )
    deadline = time.monotonic() + 60
    while sum(log.committed("order", "versions").values()) < 30_000:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    for w in workers:
        w.terminate()
        w.join(10)
    rows = query(dsn, "SELECT key, version, pid FROM applied ORDER BY seq")
    assert len(rows) == 30_000
    by_key: dict[str, list[int]] = {}
    for k, v, _ in rows:
        by_key.setdefault(k, []).append(v)
    assert all(vs == list(range(1000)) for vs in by_key.values())
    assert len({pid for _, _, pid in rows}) == 2, "both workers should have taken partitions"
