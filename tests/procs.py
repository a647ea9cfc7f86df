"""Processors used by tests (importable by spawned worker processes)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from headwater.engine.processor import Processor
from headwater.errors import RetryableError
from headwater.log.base import Conn, LogRecord


class OrderProbe(Processor):
    """Appends (key, version, worker pid) in apply order; a serial makes order visible."""

    def setup(self, conn: Conn) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS applied (seq bigserial PRIMARY KEY, key text,"
            " version int, pid int)"
        )

    def process(self, conn: Conn, records: Sequence[LogRecord]) -> None:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO applied (key, version, pid) VALUES (%s, %s, %s)",
                [
                    (r.key.decode() if r.key else None, int(r.value or b"0"), os.getpid())
                    for r in records
                ],
            )


class FlakyOnce(Processor):
    """Fails the first batch with a transient error, then copies keys into a table."""

    def __init__(self) -> None:
        self.calls = 0

    def setup(self, conn: Conn) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS flaky (key text)")

    def process(self, conn: Conn, records: Sequence[LogRecord]) -> None:
        self.calls += 1
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO flaky VALUES (%s)",
                [(r.key.decode() if r.key else None,) for r in records],
            )
        if self.calls == 1:
            raise RetryableError("embedding service briefly unavailable")


def run_order_worker(dsn: str, stop_after_s: float) -> None:
    """Entry point of a spawned worker process for the ordering test."""
    import threading

    from headwater.engine.worker import Worker, WorkerOptions
    from headwater.log.postgres import PostgresLog

    log = PostgresLog(dsn)
    w = Worker(
        pipeline="order",
        topic="versions",
        processor=OrderProbe(),
        log=log,
        dsn=dsn,
        options=WorkerOptions(batch_max_events=200, batch_max_ms=5),
    )
    threading.Timer(stop_after_s, w.stop).start()
    w.run()
