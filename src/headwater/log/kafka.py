"""The log on Apache Kafka (or any Kafka-protocol broker), through ``confluent-kafka``.

Records live in Kafka; consumer-group offsets live in Headwater's PostgreSQL
(``headwater.consumer_offsets``), exactly as with the PostgreSQL backend. A
:class:`KafkaBatchReader` uses Kafka's consumer-group protocol only to spread
partitions over worker processes: on assignment it seeks each partition to the
offset stored in PostgreSQL, and ``commit`` moves that offset inside the caller's
PostgreSQL transaction, fenced by the offset the batch started from.

Delivery guarantees:

- **Reading into PostgreSQL sinks is exactly-once**: the offsets move if and only if
  the sink's writes commit, and a worker whose partition moved under it (rebalance,
  zombie) gets :class:`~headwater.errors.FencedError` and must roll back.
- **Appends are at-least-once**: the idempotent producer (``enable.idempotence``,
  ``acks=all``) removes duplicates from its own retries, but an ``append`` that raises
  may have stored part of its records, and a caller that retries stores them again.
  DLQ appends (:func:`~headwater.log.base.dlq_topic`) are therefore at-least-once.
- Offsets mirrored to Kafka after a commit (``after_commit``) are for external lag
  tools only and are never read back.

``confluent_kafka`` is imported lazily: ``import headwater.log.kafka`` works without it,
constructing :class:`KafkaLog` raises :class:`~headwater.errors.MissingDependency`.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from headwater.config.model import KafkaConfig
from headwater.errors import FencedError, LogError, TopicMismatch, TopicNotFound, require
from headwater.log.base import (
    Batch,
    Conn,
    LogRecord,
    PartitionInfo,
    Record,
    RetentionReport,
    TopicSpec,
)
from headwater.log.partitioner import partitions_for

log = logging.getLogger(__name__)

ConfigValue = str | int | float | bool

_ADMIN_TIMEOUT_S = 30.0
_CLOSE_TIMEOUT_S = 10.0
_READ_TIMEOUT_S = 10.0

# Producer: idempotent and durable, batching for throughput (a few ms of linger
# fills batches; append() flushes anyway, so linger only adds latency to appends
# that are smaller than a batch).
PRODUCER_DEFAULTS: dict[str, ConfigValue] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "message.timeout.ms": 30_000,
    "compression.type": "none",
}

# Consumer fetching: answer a fetch as soon as any data is there and keep a deep
# local queue, so consume() drains in large batches. The group timeouts matter on
# tansu: its coordinator holds a JoinGroup for half the group's session timeout.
CONSUMER_DEFAULTS: dict[str, ConfigValue] = {
    "fetch.wait.max.ms": 50,
    "fetch.min.bytes": 1,
    "fetch.max.bytes": 52_428_800,
    "max.partition.fetch.bytes": 10_485_760,
    "queued.min.messages": 200_000,
    "queued.max.messages.kbytes": 262_144,
    "session.timeout.ms": 10_000,
    "heartbeat.interval.ms": 2_000,
    "max.poll.interval.ms": 300_000,
}


def _client_config(config: KafkaConfig) -> dict[str, ConfigValue]:
    """librdkafka settings shared by every client. Holds the SASL password: never log it."""
    conf: dict[str, ConfigValue] = {
        "bootstrap.servers": config.bootstrap_servers,
        "client.id": config.client_id,
        "security.protocol": config.security_protocol.lower(),
    }
    if config.sasl_mechanism is not None:
        conf["sasl.mechanism"] = config.sasl_mechanism
    if config.sasl_username is not None:
        conf["sasl.username"] = config.sasl_username
    if config.sasl_password is not None:
        conf["sasl.password"] = config.sasl_password.get_secret_value()
    return conf


def _headers(raw: Any) -> dict[str, str]:
    if not raw:
        return {}
    return {k: (v.decode("utf-8", "replace") if v is not None else "") for k, v in raw}


def _to_record(msg: Any) -> LogRecord:
    _ts_type, ts = msg.timestamp()
    return LogRecord(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        value=msg.value(),
        headers=_headers(msg.headers()),
        timestamp_ms=ts if ts is not None and ts >= 0 else 0,
    )


_FATAL_CODES = frozenset(
    {
        "UNKNOWN_TOPIC_OR_PART",
        "TOPIC_AUTHORIZATION_FAILED",
        "GROUP_AUTHORIZATION_FAILED",
        "SASL_AUTHENTICATION_FAILED",
        "_AUTHENTICATION",
    }
)


def _raise_for(err: Any, what: str) -> None:
    """Raise LogError for a fatal consumer error; log transient ones (librdkafka retries)."""
    if err.fatal() or err.name() in _FATAL_CODES:
        raise LogError(f"{what}: {err.str()}")
    log.warning("%s: %s (retrying)", what, err.str())


class KafkaLog:
    """:class:`~headwater.log.base.Log` on a Kafka-protocol broker.

    ``dsn`` is Headwater's PostgreSQL, where consumer offsets are kept. The record's
    partition is chosen here with Kafka's murmur2 (:func:`partition_for`), so keys land
    in the same partition as with the PostgreSQL backend and Java producers;
    keyless records go round-robin.

    Extra librdkafka settings may be given in ``producer_config`` and
    ``consumer_config``; they override :data:`PRODUCER_DEFAULTS` and
    :data:`CONSUMER_DEFAULTS`. Not thread-safe: use one instance per thread.
    """

    backend = "kafka"

    def __init__(
        self,
        config: KafkaConfig,
        dsn: str,
        *,
        producer_config: Mapping[str, ConfigValue] | None = None,
        consumer_config: Mapping[str, ConfigValue] | None = None,
    ) -> None:
        self._ck: Any = require("confluent_kafka", "kafka")
        self._admin_mod: Any = require("confluent_kafka.admin", "kafka")
        self.config = config
        self._dsn = dsn
        self._common = _client_config(config)
        self._producer_conf = {**PRODUCER_DEFAULTS, **(producer_config or {})}
        self._consumer_conf = {
            **CONSUMER_DEFAULTS,
            "session.timeout.ms": config.session_timeout_ms,
            "heartbeat.interval.ms": config.heartbeat_interval_ms,
            **(consumer_config or {}),
        }
        self._admin_client: Any = None
        self._producer_client: Any = None
        self._read_consumer: Any = None
        self._partition_counts: dict[str, int] = {}
        self._round_robin: dict[str, itertools.count[int]] = {}
        self._lock = threading.Lock()

    # -- clients (created on first use) --------------------------------------------

    @property
    def _admin(self) -> Any:
        if self._admin_client is None:
            self._admin_client = self._admin_mod.AdminClient({**self._common, "logger": log})
        return self._admin_client

    @property
    def _producer(self) -> Any:
        if self._producer_client is None:
            self._producer_client = self._ck.Producer(
                {**self._common, **self._producer_conf, "logger": log}
            )
        return self._producer_client

    def _reader_consumer(self) -> Any:
        """An assign-only consumer for read() and end-offset probes; never commits."""
        if self._read_consumer is None:
            self._read_consumer = self._ck.Consumer(
                {
                    **self._common,
                    **self._consumer_conf,
                    "group.id": f"{self.config.client_id}.reader",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": True,
                    "auto.offset.reset": "earliest",
                    "logger": log,
                }
            )
        return self._read_consumer

    # -- topics --------------------------------------------------------------------

    def _metadata(self, topic: str | None = None) -> Any:
        try:
            if topic is None:
                return self._admin.list_topics(timeout=_ADMIN_TIMEOUT_S)
            return self._admin.list_topics(topic=topic, timeout=_ADMIN_TIMEOUT_S)
        except self._ck.KafkaException as exc:
            raise LogError(f"cannot read Kafka metadata: {exc.args[0].str()}") from None

    def _partition_count(self, topic: str, *, refresh: bool = False) -> int:
        if not refresh and topic in self._partition_counts:
            return self._partition_counts[topic]
        tmeta = self._metadata().topics.get(topic)
        if tmeta is None or tmeta.error is not None or not tmeta.partitions:
            raise TopicNotFound(f"topic {topic!r} does not exist in Kafka")
        n = len(tmeta.partitions)
        self._partition_counts[topic] = n
        return n

    def create_topic(self, spec: TopicSpec) -> None:
        """Create the topic, or check an existing one has ``spec.partitions`` partitions.

        ``compacted`` sets ``cleanup.policy=compact``; ``retention_ms`` and
        ``retention_bytes`` become ``retention.ms`` / ``retention.bytes`` (Kafka applies
        ``retention.bytes`` per partition). Settings of an existing topic are not changed.

        Raises:
            TopicMismatch: it exists with another number of partitions.
        """
        configs: dict[str, str] = {}
        if spec.compacted:
            configs["cleanup.policy"] = "compact"
        if spec.retention_ms is not None:
            configs["retention.ms"] = str(spec.retention_ms)
        if spec.retention_bytes is not None:
            configs["retention.bytes"] = str(spec.retention_bytes)
        new = self._admin_mod.NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=self.config.replication_factor,
            config=configs,
        )
        future = self._admin.create_topics([new], operation_timeout=_ADMIN_TIMEOUT_S)[spec.name]
        try:
            future.result(timeout=_ADMIN_TIMEOUT_S)
        except self._ck.KafkaException as exc:
            err = exc.args[0]
            if err.code() != self._ck.KafkaError.TOPIC_ALREADY_EXISTS:
                raise LogError(f"cannot create topic {spec.name!r}: {err.str()}") from None
        deadline = time.monotonic() + _ADMIN_TIMEOUT_S
        while True:  # metadata can lag a creation for a moment
            try:
                existing = self._partition_count(spec.name, refresh=True)
                break
            except TopicNotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        if existing != spec.partitions:
            raise TopicMismatch(
                f"topic {spec.name!r} exists with {existing} partitions, "
                f"not {spec.partitions}; use another name or change the configuration"
            )

    def topics(self) -> list[TopicSpec]:
        """Topics in the cluster (internal ``__*`` topics left out), with their settings."""
        meta = self._metadata()
        names = sorted(n for n, t in meta.topics.items() if t.error is None and n[:2] != "__")
        configs = self._topic_configs(names)
        out = []
        for name in names:
            cfg = configs.get(name, {})
            ms, size = cfg.get("retention.ms"), cfg.get("retention.bytes")
            out.append(
                TopicSpec(
                    name=name,
                    partitions=len(meta.topics[name].partitions),
                    compacted="compact" in (cfg.get("cleanup.policy") or ""),
                    retention_ms=int(ms) if ms and int(ms) >= 0 else None,
                    retention_bytes=int(size) if size and int(size) >= 0 else None,
                )
            )
        return out

    def _topic_configs(self, names: list[str]) -> dict[str, dict[str, str | None]]:
        """Topic configs via DescribeConfigs; brokers that refuse it give {}."""
        if not names:
            return {}
        resources = [self._admin_mod.ConfigResource("topic", n) for n in names]
        out: dict[str, dict[str, str | None]] = {}
        try:
            for res, fut in self._admin.describe_configs(resources).items():
                entries = fut.result(timeout=_ADMIN_TIMEOUT_S)
                out[res.name] = {k: e.value for k, e in entries.items()}
        except Exception as exc:  # informational only: never fail topics() on it
            log.debug("describe_configs failed: %s", exc)
        return out

    def partitions(self, topic: str) -> list[PartitionInfo]:
        """Start and end offsets of each partition.

        The end offset is one past the last record actually stored: some brokers
        (tansu 0.6) report a high watermark that is the last *batch's* base offset + 1,
        so the last batch is read to find its true end.

        Raises:
            TopicNotFound
        """
        n = self._partition_count(topic, refresh=True)
        with self._lock:
            consumer = self._reader_consumer()
            out = []
            for p in range(n):
                tp = self._ck.TopicPartition(topic, p)
                try:
                    low, high = consumer.get_watermark_offsets(
                        tp, timeout=_ADMIN_TIMEOUT_S, cached=False
                    )
                except self._ck.KafkaException as exc:
                    raise LogError(
                        f"cannot read offsets of {topic}[{p}]: {exc.args[0].str()}"
                    ) from None
                end = high
                if high > low:
                    tail = self._read_locked(topic, p, high - 1, 1_000_000)
                    if tail:
                        end = max(high, tail[-1].offset + 1)
                out.append(PartitionInfo(partition=p, start_offset=low, end_offset=end))
        return out

    # -- append and read -----------------------------------------------------------

    def append(
        self, topic: str, records: Sequence[Record], *, conn: Conn | None = None
    ) -> list[tuple[int, int]]:
        """Append and wait until every record is acknowledged by all in-sync replicas.

        Returns ``(partition, offset)`` per record in input order. Per partition the
        records keep their input order (idempotent producer). At-least-once: when this
        raises, some records may have been stored.

        Raises:
            LogError: ``conn`` was given (a Kafka append cannot join a PostgreSQL
                transaction), or a record was not delivered.
            TopicNotFound
        """
        if conn is not None:
            raise LogError(
                "the Kafka log cannot append inside a PostgreSQL transaction (conn=...); "
                "append after commit and make the consumer idempotent"
            )
        if not records:
            return []
        n = self._partition_count(topic)
        rr = self._round_robin.setdefault(topic, itertools.count())
        results: list[tuple[int, int] | None] = [None] * len(records)
        errors: list[str] = []
        producer = self._producer
        # With the idempotent producer, delivery reports of a partition come in
        # produce order: a FIFO of input indexes per partition maps them back.
        waiting: dict[int, deque[int]] = {p: deque() for p in range(n)}

        def delivered(err: Any, msg: Any) -> None:
            p = msg.partition()
            i = waiting[p].popleft()
            if err is not None:
                errors.append(f"{topic}[{p}]: {err.str()}")
            else:
                results[i] = (p, msg.offset())

        produce = producer.produce
        parts = partitions_for([r.key for r in records], n, rr)
        for i, (p, rec) in enumerate(zip(parts, records, strict=True)):
            ts = rec.timestamp_ms or 0  # 0: the producer's clock
            waiting[p].append(i)
            while True:
                try:
                    if rec.headers:
                        hdrs = [(k, v.encode()) for k, v in rec.headers.items()]
                        produce(topic, rec.value, rec.key, p, delivered, timestamp=ts, headers=hdrs)
                    else:
                        produce(topic, rec.value, rec.key, p, delivered, timestamp=ts)
                    break
                except BufferError:  # local queue full: let deliveries drain it
                    producer.poll(0.05)
                except self._ck.KafkaException as exc:
                    raise LogError(f"cannot append to {topic!r}: {exc.args[0].str()}") from None
        while producer.flush(1.0) > 0:  # bounded by message.timeout.ms
            pass
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise LogError(f"append to {topic!r} failed: {errors[0]}{more}")
        if any(r is None for r in results):
            raise LogError(f"append to {topic!r}: some records got no delivery report")
        return [r for r in results if r is not None]

    def read(
        self, topic: str, partition: int, offset: int, max_records: int = 1000
    ) -> list[LogRecord]:
        """Records of one partition from ``offset`` on, at most ``max_records``; stops at
        the end of the partition. Offsets may have gaps (compaction, transaction markers).

        Raises:
            TopicNotFound
        """
        n = self._partition_count(topic)
        if not 0 <= partition < n:
            raise LogError(f"topic {topic!r} has no partition {partition}")
        with self._lock:
            return self._read_locked(topic, partition, offset, max_records)

    def _read_locked(
        self, topic: str, partition: int, offset: int, max_records: int
    ) -> list[LogRecord]:
        consumer = self._reader_consumer()
        consumer.assign([self._ck.TopicPartition(topic, partition, max(offset, 0))])
        out: list[LogRecord] = []
        deadline = time.monotonic() + _READ_TIMEOUT_S
        try:
            while len(out) < max_records:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # Short slices: consume() waits its whole timeout unless the batch
                # fills, and the end of the partition shows only as an EOF event.
                msgs = consumer.consume(min(max_records - len(out), 10_000), min(remaining, 0.02))
                eof = False
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() == self._ck.KafkaError._PARTITION_EOF:
                            eof = True
                            continue
                        _raise_for(err, f"read {topic}[{partition}]")
                        continue
                    if msg.offset() >= offset and len(out) < max_records:
                        out.append(_to_record(msg))
                if eof:
                    break
        finally:
            consumer.unassign()
        return out

    # -- consumer groups -----------------------------------------------------------

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's next offsets per partition, from PostgreSQL (missing: never)."""
        with psycopg.connect(self._dsn, autocommit=True) as pg:
            return _stored_offsets(pg, group, topic, None)

    def reader(self, group: str, topic: str) -> KafkaBatchReader:
        """A batch reader in Kafka consumer group ``group``; readers of one group share
        the topic's partitions. Offsets are kept in PostgreSQL, not in Kafka."""
        self._partition_count(topic)
        return KafkaBatchReader(self, group, topic)

    def enforce_retention(self) -> RetentionReport:
        """Nothing to do: Kafka applies retention and compaction itself."""
        return RetentionReport()

    def close(self) -> None:
        """Flush pending appends (bounded) and close the clients."""
        if self._producer_client is not None:
            self._producer_client.flush(_CLOSE_TIMEOUT_S)
            self._producer_client = None
        if self._read_consumer is not None:
            _close_bounded(self._read_consumer, _CLOSE_TIMEOUT_S)
            self._read_consumer = None
        self._admin_client = None


def _stored_offsets(
    conn: Conn, group: str, topic: str, partitions: Sequence[int] | None, *, lock: bool = False
) -> dict[int, int]:
    sql = (
        "SELECT partition, next_offset FROM headwater.consumer_offsets"
        " WHERE group_name = %s AND topic = %s"
    )
    params: list[Any] = [group, topic]
    if partitions is not None:
        sql += " AND partition = ANY(%s)"
        params.append(list(partitions))
    if lock:
        sql += " ORDER BY partition FOR UPDATE"
    return {int(p): int(o) for p, o in conn.execute(sql, params).fetchall()}


def _close_bounded(consumer: Any, timeout_s: float) -> None:
    """Close a consumer (leaving its group) without blocking longer than ``timeout_s``."""
    t = threading.Thread(target=consumer.close, name="headwater-kafka-close", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        log.warning("Kafka consumer did not close within %.0fs; abandoning it", timeout_s)


_UPSERT = """
INSERT INTO headwater.consumer_offsets AS o
    (group_name, topic, partition, next_offset, position, updated_at)
VALUES (%(group)s, %(topic)s, %(partition)s, %(next)s, %(position)s, now())
ON CONFLICT (group_name, topic, partition) DO UPDATE
SET next_offset = EXCLUDED.next_offset,
    position = CASE WHEN %(set_position)s THEN EXCLUDED.position ELSE o.position END,
    updated_at = EXCLUDED.updated_at
WHERE o.next_offset = %(start)s
"""


class KafkaBatchReader:
    """Reads micro-batches of one topic for one consumer group, offsets in PostgreSQL.

    Kafka's group protocol assigns partitions; on assignment each partition is sought
    to the offset stored in PostgreSQL (never-committed partitions start at the
    beginning), Kafka's own committed offsets are ignored. ``commit`` locks the
    group's rows, checks they still hold the offsets the batch started from
    (otherwise :class:`FencedError`) and moves them, all inside the caller's
    transaction. With a PostgreSQL sink writing in that same transaction this is
    exactly-once: a batch's effects and its offsets commit together or not at all.

    Protocol per batch (see :class:`~headwater.log.base.BatchReader`):
    1. ``next_batch(conn)``  2. sink writes on ``conn``  3. ``commit(conn, batch)``
    4. ``conn.commit()`` then ``after_commit(batch)``, or on any error
    ``conn.rollback()`` then ``after_rollback()`` (rewinds to the stored offsets).
    """

    def __init__(self, log_: KafkaLog, group: str, topic: str) -> None:
        self._log = log_
        self._ck = log_._ck
        self.group = group
        self.topic = topic
        self._pos: dict[int, int] = {}
        """Per assigned partition: the offset the next record is expected at."""
        self._starts: dict[int, int] = {}
        """Per assigned partition: where the batch being read started."""
        self._pending: dict[int, list[LogRecord]] = {}
        self._closed = False
        self._consumer: Any = self._ck.Consumer(
            {
                **log_._common,
                **log_._consumer_conf,
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
                "auto.offset.reset": "earliest",
                "logger": log,
            }
        )
        self._consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    @property
    def assignment(self) -> list[int]:
        """Partitions this reader owns now."""
        return sorted(self._pos)

    # -- rebalance callbacks (run inside consume()) --------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        wanted = [tp.partition for tp in partitions if tp.topic == self.topic]
        stored = self._stored(wanted)
        assign = []
        for p in wanted:
            off = stored.get(p)
            self._pos[p] = self._starts[p] = off if off is not None else 0
            start = off if off is not None else self._ck.OFFSET_BEGINNING
            assign.append(self._ck.TopicPartition(self.topic, p, start))
        consumer.assign(assign)
        log.info("group %s: assigned %s%s", self.group, self.topic, sorted(wanted))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self._pos.pop(tp.partition, None)
            self._starts.pop(tp.partition, None)
            self._pending.pop(tp.partition, None)
        consumer.unassign()
        log.info("group %s: revoked %s", self.group, sorted(tp.partition for tp in partitions))

    def _stored(self, partitions: Sequence[int]) -> dict[int, int]:
        try:
            with psycopg.connect(self._log._dsn, autocommit=True) as pg:
                return _stored_offsets(pg, self.group, self.topic, partitions)
        except psycopg.Error as exc:
            raise LogError(
                f"cannot read offsets of group {self.group!r} from PostgreSQL: {type(exc).__name__}"
            ) from None

    # -- the batch protocol --------------------------------------------------------

    def next_batch(self, conn: Conn, max_events: int, max_wait_ms: int) -> Batch | None:
        """Read up to ``max_events`` records from the assigned partitions, waiting at most
        ``max_wait_ms`` for the batch to fill. None when nothing arrived (also while the
        group is still forming). ``conn`` is not used: claiming is Kafka's job here."""
        if self._closed:
            raise LogError("reader is closed")
        self._starts = dict(self._pos)
        self._pending = {}
        count = 0
        deadline = time.monotonic() + max_wait_ms / 1000
        while count < max_events:
            remaining = max(deadline - time.monotonic(), 0.0)
            msgs = self._consumer.consume(min(max_events - count, 100_000), remaining)
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    _raise_for(err, f"consume {self.topic} for group {self.group!r}")
                    continue
                p = msg.partition()
                pos = self._pos.get(p)
                if pos is None or msg.offset() < pos:
                    continue  # not ours (revoked) or already delivered before a seek
                self._starts.setdefault(p, pos)
                self._pending.setdefault(p, []).append(_to_record(msg))
                self._pos[p] = msg.offset() + 1
                count += 1
            if remaining <= 0:
                break
        records = [r for rs in self._pending.values() for r in rs]
        if not records:
            return None
        kept = {p: self._starts[p] for p in self._pending}
        self._pending = {}
        return Batch(topic=self.topic, records=records, start_offsets=kept)

    def commit(
        self, conn: Conn, batch: Batch, positions: Mapping[int, str | None] | None = None
    ) -> None:
        """Move the group's offsets past ``batch`` inside ``conn``'s transaction.

        ``positions`` (per partition) is stored as the source position of the last
        applied record; partitions not in it keep their stored position.

        Raises:
            FencedError: a stored offset is not where the batch started (a missing row
                counts as 0): another worker committed this partition. Roll back.
        """
        ends: dict[int, int] = {}
        for rec in batch.records:
            ends[rec.partition] = max(ends.get(rec.partition, -1), rec.offset + 1)
        if not ends:
            return
        parts = sorted(ends)
        stored = _stored_offsets(conn, self.group, self.topic, parts, lock=True)
        for p in parts:
            start = batch.start_offsets.get(p)
            if start is None or stored.get(p, 0) != start:
                raise FencedError(
                    f"group {self.group!r}, {self.topic}[{p}]: committed offset is "
                    f"{stored.get(p, 0)}, the batch started at {start}; another worker owns it"
                )
        for p in parts:
            cur = conn.execute(
                _UPSERT,
                {
                    "group": self.group,
                    "topic": self.topic,
                    "partition": p,
                    "next": ends[p],
                    "start": batch.start_offsets[p],
                    "position": positions.get(p) if positions else None,
                    "set_position": positions is not None and p in positions,
                },
            )
            if cur.rowcount != 1:  # a concurrent first commit inserted the row meanwhile
                raise FencedError(
                    f"group {self.group!r}, {self.topic}[{p}]: offset moved concurrently"
                )

    def after_commit(self, batch: Batch) -> None:
        """Mirror the new offsets to Kafka, asynchronously, for external lag tools only."""
        ends: dict[int, int] = {}
        for rec in batch.records:
            ends[rec.partition] = max(ends.get(rec.partition, -1), rec.offset + 1)
        offsets = [self._ck.TopicPartition(self.topic, p, o) for p, o in ends.items()]
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except self._ck.KafkaException as exc:  # non-authoritative: never fail on it
            log.debug("mirroring offsets to Kafka failed: %s", exc)

    def after_rollback(self) -> None:
        """Rewind every assigned partition to the offset stored in PostgreSQL."""
        parts = sorted(self._pos)
        if not parts:
            return
        stored = self._stored(parts)
        tps = []
        for p in parts:
            off = stored.get(p)
            self._pos[p] = off if off is not None else 0
            start = off if off is not None else self._ck.OFFSET_BEGINNING
            tps.append(self._ck.TopicPartition(self.topic, p, start))
        try:
            for tp in tps:
                self._consumer.seek(tp)
        except self._ck.KafkaException:
            self._consumer.assign(tps)  # not yet fetching: re-assign at the offsets

    def close(self) -> None:
        """Leave the group and close; bounded, never blocks forever."""
        if self._closed:
            return
        self._closed = True
        self._pos.clear()
        _close_bounded(self._consumer, _CLOSE_TIMEOUT_S)
