"""The log: what every backend offers, and the records it carries.

A topic has N partitions; a record's partition is chosen from its key
(:func:`headwater.log.partitioner.partition_for`, Kafka's murmur2, so both backends
and Java producers agree). Within a partition, offsets are dense at append time,
increase in commit order and are never reused. A record whose value is ``None`` is a
tombstone (on a compacted topic it deletes the key).

Consumers read batches through a :class:`BatchReader`, whose ``commit`` joins the
caller's PostgreSQL transaction: the offsets move if and only if the sink's writes
commit. That is what makes PostgreSQL sinks exactly-once on either backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg

Conn = psycopg.Connection[Any]


@dataclass(frozen=True, slots=True)
class Record:
    """A record to append. ``value=None`` is a tombstone."""

    key: bytes | None
    value: bytes | None
    headers: Mapping[str, str] = field(default_factory=dict)
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class LogRecord:
    """A record as stored in the log."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, str]
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic's definition. ``compacted`` keeps the latest value per key."""

    name: str
    partitions: int = 3
    compacted: bool = False
    retention_ms: int | None = None
    retention_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    partition: int
    start_offset: int
    end_offset: int


@dataclass(frozen=True, slots=True)
class Batch:
    """Records read for one consumer group, and where each partition started."""

    topic: str
    records: Sequence[LogRecord]
    start_offsets: Mapping[int, int]
    """Per partition claimed: the committed offset this batch read from."""


@dataclass(frozen=True, slots=True)
class RetentionReport:
    deleted: int = 0
    compacted: int = 0


def dlq_topic(pipeline: str) -> str:
    """The dead-letter topic of a pipeline."""
    return f"{pipeline}.dlq"


class BatchReader(Protocol):
    """Reads micro-batches for one consumer group of one topic.

    Protocol for one batch, all inside one PostgreSQL transaction on ``conn``:
    ``next_batch(conn)`` → caller writes its outputs on ``conn`` → ``commit(conn,
    batch, ends)`` → caller commits the transaction. A rollback leaves the offsets
    where they were, so the batch is read again.
    """

    def next_batch(self, conn: Conn, max_events: int, max_wait_ms: int) -> Batch | None:
        """Claim partitions and read up to ``max_events`` records, waiting at most
        ``max_wait_ms`` for the batch to fill. None when nothing arrived."""
        ...

    def commit(
        self, conn: Conn, batch: Batch, positions: Mapping[int, str | None] | None = None
    ) -> None:
        """Move the group's offsets past ``batch`` inside ``conn``'s transaction.

        Raises:
            FencedError: the committed offsets are not where the batch started:
                another worker owns the partition. Roll back.
        """
        ...

    def after_commit(self, batch: Batch) -> None:
        """Called after the transaction committed (e.g. to mirror offsets to Kafka)."""
        ...

    def after_rollback(self) -> None:
        """Called after the transaction rolled back: rewind to the committed offsets."""
        ...

    def close(self) -> None: ...


class Log(Protocol):
    """A durable, partitioned, replayable log."""

    backend: str

    def create_topic(self, spec: TopicSpec) -> None:
        """Create the topic, or check an existing one has the same partition count.

        Raises:
            TopicMismatch: it exists with another number of partitions.
        """
        ...

    def topics(self) -> list[TopicSpec]: ...

    def partitions(self, topic: str) -> list[PartitionInfo]:
        """Start and end offsets of each partition.

        Raises:
            TopicNotFound
        """
        ...

    def append(
        self, topic: str, records: Sequence[Record], *, conn: Conn | None = None
    ) -> list[tuple[int, int]]:
        """Append durably; return ``(partition, offset)`` per record, in input order.

        Records are partitioned by key; per partition they keep their input order.
        With ``conn`` (postgres backend) the append joins the caller's transaction.

        Raises:
            TopicNotFound
        """
        ...

    def read(
        self, topic: str, partition: int, offset: int, max_records: int = 1000
    ) -> list[LogRecord]:
        """Records of one partition from ``offset`` on (gaps where compaction or
        retention removed records)."""
        ...

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed next offset per partition (missing: never committed)."""
        ...

    def reader(self, group: str, topic: str) -> BatchReader:
        """A batch reader for ``group``; several readers of one group share partitions."""
        ...

    def enforce_retention(self) -> RetentionReport:
        """Apply retention by time and size, and compact compacted topics."""
        ...

    def close(self) -> None: ...
