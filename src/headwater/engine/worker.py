"""The worker loop: read a micro-batch, process, sink and commit offsets atomically.

Commit protocol for one batch, in one PostgreSQL transaction on the worker's
connection (numbered, as everything else relies on this order):

1. ``reader.next_batch`` claims partitions (postgres: row locks on the offsets) and
   reads up to ``batch_max_events`` records, lingering ``batch_max_ms`` to fill.
2. The processor writes its outputs. If it raises, the transaction is rolled back and
   the batch read again and processed under savepoints, bisected until the failing
   record is alone; that record goes to the dead-letter topic with its error and
   origin (topic, partition, offset). (Savepoints cost two round trips a batch, so
   only a batch that failed once pays for them.)
3. Per-partition counters are updated.
4. ``reader.commit`` moves the offsets (and the watermark positions); it raises
   :class:`FencedError` if another worker moved them (the transaction rolls back).
5. COMMIT. Then ``reader.after_commit``.

Transient failures (connection loss, serialization failure, deadlock,
:class:`RetryableError`) roll the whole batch back and retry it with exponential
backoff and jitter. A stop request (SIGINT/SIGTERM) lets the current batch finish
and commit, then the worker returns.

Dead letters: on the ``postgres`` log they are appended inside the batch's
transaction (exactly-once); on ``kafka`` they are produced before the commit
(at-least-once: a crash between the two can repeat a dead letter, never lose one).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
import psycopg.errors

from headwater.engine.processor import Processor
from headwater.errors import FencedError, RetryableError
from headwater.log.base import BatchReader, Conn, Log, LogRecord, Record, dlq_topic
from headwater.storage.database import connect

log = logging.getLogger(__name__)

_TRANSIENT = (
    psycopg.OperationalError,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.LockNotAvailable,
    RetryableError,
)


class _RetryCarefully(Exception):
    """The processor failed on a batch processed without savepoints."""


@dataclass(frozen=True)
class WorkerOptions:
    batch_max_events: int = 1000
    batch_max_ms: int = 10
    retry_initial_ms: int = 100
    retry_max_ms: int = 10_000


@dataclass
class WorkerStats:
    batches: int = 0
    events: int = 0
    dead_letters: int = 0
    retries: int = 0
    fenced: int = 0


class Worker:
    """Runs one processor over one topic for one pipeline (its consumer group)."""

    def __init__(
        self,
        *,
        pipeline: str,
        topic: str,
        processor: Processor,
        log: Log,
        dsn: str,
        options: WorkerOptions | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.topic = topic
        self.processor = processor
        self.log = log
        self.dsn = dsn
        self.options = options or WorkerOptions()
        self.stats = WorkerStats()
        self.stop_event = threading.Event()
        self._dlq = dlq_topic(pipeline)
        self._pending_dlq: list[Record] = []
        self._careful = False  # the next batch is processed under savepoints

    def run(self, *, max_batches: int | None = None, until_idle: bool = False) -> WorkerStats:
        """Process batches until stopped (or ``max_batches``, or the first empty poll
        when ``until_idle``). Returns the counters of this run."""
        conn = connect(self.dsn, application_name=self.application_name)
        reader = self.log.reader(self.pipeline, self.topic)
        try:
            with conn.transaction():
                # workers of one pipeline start together: their CREATE ... IF NOT EXISTS
                # would race on the catalog (a unique violation), so setups run one at a
                # time (a one-key lock: two-key advisory locks are the log's member slots)
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    (f"headwater setup {self.pipeline}",),
                )
                self.processor.setup(conn)
            backoff = self.options.retry_initial_ms
            while not self.stop_event.is_set():
                if max_batches is not None and self.stats.batches >= max_batches:
                    break
                try:
                    done = self._one_batch(conn, reader)
                    backoff = self.options.retry_initial_ms
                except _RetryCarefully:
                    reader.after_rollback()
                    self._careful = True
                    continue
                except FencedError as exc:
                    self.stats.fenced += 1
                    log.info("%s: %s; re-reading", self.pipeline, exc)
                    reader.after_rollback()
                    continue
                except _TRANSIENT as exc:
                    self.stats.retries += 1
                    reader.after_rollback()
                    delay = min(backoff, self.options.retry_max_ms) / 1000
                    delay *= random.uniform(0.5, 1.0)
                    log.warning(
                        "%s: transient failure, retrying in %.2fs: %s",
                        self.pipeline,
                        delay,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    )
                    self.stop_event.wait(delay)
                    backoff = min(backoff * 2, self.options.retry_max_ms)
                    if conn.closed or conn.broken:
                        conn = self._reconnect(conn)
                    continue
                if not done and until_idle:
                    break
        finally:
            reader.close()
            conn.close()
        return self.stats

    @property
    def application_name(self) -> str:
        """How this worker's sessions appear in ``pg_stat_activity``."""
        return f"headwater-worker:{self.pipeline}"[:63]

    def stop(self) -> None:
        """Ask the loop to finish its current batch, commit and return."""
        self.stop_event.set()

    # -- one batch ----------------------------------------------------------------------

    def _one_batch(self, conn: Conn, rd: BatchReader) -> bool:
        self._pending_dlq = []
        with conn.transaction():
            batch = rd.next_batch(conn, self.options.batch_max_events, self.options.batch_max_ms)
            if batch is None:
                return False
            self._apply(conn, batch.records)
            positions: dict[int, str | None] = {}
            per_part: Counter[int] = Counter()
            for r in batch.records:
                per_part[r.partition] += 1
                pos = self.processor.position(r)
                if pos is not None:
                    positions[r.partition] = pos
            dead = Counter(int(d.headers["origin_partition"]) for d in self._pending_dlq)
            if self._pending_dlq:
                if self.log.backend == "postgres":
                    self.log.append(self._dlq, self._pending_dlq, conn=conn)
                else:
                    self.log.append(self._dlq, self._pending_dlq)
            parts = sorted(per_part)
            # counters and offsets in one round trip where the offsets live in the log's
            # own tables (the kafka reader's commit reads row counts between statements)
            piped = conn.pipeline() if self.log.backend == "postgres" else contextlib.nullcontext()
            with piped:
                self._count(conn, parts, per_part, dead)
                rd.commit(conn, batch, positions)
        rd.after_commit(batch)
        self._careful = False
        self.stats.batches += 1
        self.stats.events += len(batch.records)
        self.stats.dead_letters += len(self._pending_dlq)
        return True

    def _count(
        self, conn: Conn, parts: list[int], per_part: Counter[int], dead: Counter[int]
    ) -> None:
        """Add a batch's events and dead letters to ``headwater.pipeline_stats``."""
        conn.execute(
            "INSERT INTO headwater.pipeline_stats AS s"
            " (pipeline, partition, events, dead_letters, last_batch_at)"
            " SELECT %s, p, e, d, now() FROM unnest(%s::int4[], %s::int8[], %s::int8[])"
            " AS v(p, e, d) ON CONFLICT (pipeline, partition) DO UPDATE SET"
            " events = s.events + excluded.events,"
            " dead_letters = s.dead_letters + excluded.dead_letters,"
            " last_batch_at = excluded.last_batch_at",
            (
                self.pipeline,
                parts,
                [per_part[p] for p in parts],
                [dead[p] for p in parts],
            ),
        )

    def _apply(self, conn: Conn, records: Sequence[LogRecord]) -> None:
        """Process ``records``. Careful mode: in a savepoint; on a non-transient error
        bisect until the failing record is alone and dead-letter it (order is kept).
        Otherwise without a savepoint: an error rolls the batch back to be read again
        and processed carefully.

        Raises:
            _RetryCarefully: not careful, and the processor failed.
        """
        if not self._careful:
            try:
                self.processor.process(conn, records)
            except _TRANSIENT:
                raise
            except Exception as exc:
                raise _RetryCarefully from exc
            return
        try:
            with conn.transaction():
                self.processor.process(conn, records)
            return
        except _TRANSIENT:
            raise
        except Exception as exc:
            if len(records) == 1:
                self._dead_letter(records[0], exc)
                return
        mid = len(records) // 2
        self._apply(conn, records[:mid])
        self._apply(conn, records[mid:])

    def _dead_letter(self, record: LogRecord, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}".strip()[:2000]
        log.warning(
            "%s: record %s/%d/%d dead-lettered: %s",
            self.pipeline,
            record.topic,
            record.partition,
            record.offset,
            error.splitlines()[0],
        )
        headers = dict(record.headers)
        headers.update(
            {
                "error": error,
                "error_type": type(exc).__name__,
                "error_trace": "".join(traceback.format_exception(exc))[-4000:],
                "origin_topic": record.topic,
                "origin_partition": str(record.partition),
                "origin_offset": str(record.offset),
                "pipeline": self.pipeline,
                "failed_at_ms": str(int(time.time() * 1000)),
            }
        )
        self._pending_dlq.append(Record(record.key, record.value, headers))

    def _reconnect(self, old: Conn) -> Conn:
        with contextlib.suppress(psycopg.Error):
            old.close()
        while not self.stop_event.is_set():
            try:
                return connect(self.dsn, application_name=self.application_name)
            except Exception as exc:  # StorageError while the database is away
                log.warning("%s: reconnect failed: %s", self.pipeline, exc)
                self.stop_event.wait(1.0)
        return connect(self.dsn)
