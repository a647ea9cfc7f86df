"""The kafka log backend on tansu: append rate and append→consume→table sink rate.

Called by log_throughput.py (same run, same limit); runs alone too.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from _common import Timer, embedded_database, row, run_until
from headwater.config.model import KafkaConfig
from headwater.engine.worker import Worker, WorkerOptions
from headwater.log.base import Record, TopicSpec
from headwater.sinks.table import TableSink
from headwater.testing import tansu_broker


def run(n: int, batch: int, limit: float | None) -> None:
    from headwater.log.kafka import KafkaLog

    value = b'{"v": "' + b"x" * 190 + b'"}'
    recs = [Record(f"customer-{i % 10_000}".encode(), value) for i in range(n)]
    with tansu_broker() as bootstrap, embedded_database("kbench") as dsn:
        cfg = KafkaConfig(
            bootstrap_servers=bootstrap, session_timeout_ms=2000, heartbeat_interval_ms=500
        )
        log = KafkaLog(cfg, dsn)
        log.create_topic(TopicSpec("bench", 3))
        with Timer() as t:
            for s in range(0, n, batch):
                log.append("bench", recs[s : s + batch])
        append = n / t.seconds
        worker = Worker(
            pipeline="kbench",
            topic="bench",
            processor=TableSink("sink"),
            log=log,
            dsn=dsn,
            options=WorkerOptions(batch_max_events=5000, batch_max_ms=20),
        )
        start = time.perf_counter()
        run_until(worker, lambda: sum(log.committed("kbench", "bench").values()) >= n)
        e2e = n / (time.perf_counter() - start)
        log.close()
    note = f"= {append / limit:.0%} of the limit" if limit else ""
    row("headwater append, kafka log (tansu)", append, note=note)
    note = f"= {e2e / limit:.0%} of the limit" if limit else ""
    row("consume→table sink, kafka log (tansu)", e2e, note=note + " (group join included)")


if __name__ == "__main__":
    run(200_000, 1000, None)
