"""The log kept in PostgreSQL (the embedded default).

Layout: ``headwater.topics`` and ``headwater.log_partitions`` hold metadata; each
topic's records live in ``headwater_log.t_<id>`` as *segments*: one row per append and
partition, holding that append's records of the partition framed back to back
(:mod:`headwater.log.segment`), keyed by (partition, last_offset). Per-row costs are
paid per segment, so appends run at COPY speed.

Guarantees:
- **Order under concurrent writers**: an append locks its partitions' rows in
  ``log_partitions`` (in partition order, so appenders never deadlock) until its
  transaction ends. Offsets are therefore assigned and made visible in commit order:
  a reader that saw offset N will never later see a new record below N.
- **Atomic appends**: a batch is written in one transaction; with ``conn`` it joins
  the caller's open transaction (outputs and dead letters commit with the sink's
  writes; a failed append leaves that transaction to be rolled back).
- **Exactly-once consumption into PostgreSQL**: :class:`PostgresBatchReader` locks the
  group's offset rows ``FOR UPDATE SKIP LOCKED`` in the caller's transaction and moves
  them in the same transaction. Two workers can never process one partition at once,
  and a crash rolls back outputs and offsets together.
- **Sharing**: workers of a group take slots with session advisory locks; partitions
  are spread over the live slots (a dead worker's lock vanishes with its connection).
- **Wake-up**: an append notifies ``headwater_log_<topic id>`` in its transaction (so
  at its commit); a reader that caught up LISTENs for it rather than polling, and reads
  again at least every 0.2 s whatever it heard.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from itertools import count

from psycopg import pq, sql

from headwater.errors import FencedError, LogError, TopicMismatch, TopicNotFound
from headwater.log.base import (
    Batch,
    Conn,
    LogRecord,
    PartitionInfo,
    Record,
    RetentionReport,
    TopicSpec,
)
from headwater.log.copy_binary import encode_segment_rows
from headwater.log.partitioner import partitions_for
from headwater.log.segment import SegmentFramer, decode_segment, reencode

_COLUMNS = "partition, base_offset, last_offset, record_count, max_ts_ms, payload"
_LOCK_AND_RESERVE = (
    "WITH locked AS MATERIALIZED (SELECT partition FROM headwater.log_partitions"
    " WHERE topic_id = %(t)s AND partition = ANY(%(p)s) ORDER BY partition FOR UPDATE)"
    " UPDATE headwater.log_partitions lp SET next_offset = lp.next_offset + v.n"
    " FROM unnest(%(p)s::int4[], %(n)s::int8[]) AS v(p, n), locked"
    " WHERE lp.topic_id = %(t)s AND lp.partition = v.p AND locked.partition = v.p"
    " RETURNING lp.partition, lp.next_offset - v.n AS base, pg_notify(%(channel)s, '')"
)
# Appends of up to this many records reserve and insert in one statement (one round
# trip); bigger ones COPY their segments after the reservation.
_SMALL_APPEND_RECORDS = 16
_IDLE = pq.TransactionStatus.IDLE
_IDLE_WAIT_S = 0.2
_MEMBERSHIP_REFRESH_S = 0.5
_MAX_SLOTS = 256


class _Topic:
    __slots__ = (
        "append_stmt",
        "channel",
        "compacted",
        "copy_stmt",
        "id",
        "name",
        "partitions",
        "read_stmt",
        "records_per_segment",
        "table",
    )

    def __init__(self, id: int, name: str, partitions: int, compacted: bool) -> None:
        self.id = id
        self.name = name
        self.partitions = partitions
        self.compacted = compacted
        self.table = sql.Identifier("headwater_log", f"t_{id}")
        # Appends notify it at commit; readers LISTEN instead of polling an idle topic.
        self.channel = f"headwater_log_{id}"
        # Rendered once: composing SQL costs ~0.4 ms per call.
        self.copy_stmt = f"COPY headwater_log.t_{id} ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
        self.append_stmt = (
            f"WITH r AS ({_LOCK_AND_RESERVE}) INSERT INTO headwater_log.t_{id} ({_COLUMNS})"
            " SELECT r.partition, r.base, r.base + s.n - 1, s.n, s.ts, s.payload"
            " FROM r JOIN unnest(%(p)s::int4[], %(n)s::int8[], %(ts)s::int8[],"
            " %(payloads)s::bytea[]) AS s(p, n, ts, payload) ON s.p = r.partition"
            " RETURNING partition, base_offset"
        )
        self.read_stmt = (
            "SELECT s.partition, s.base_offset, s.record_count, s.payload"
            " FROM unnest(%s::int4[], %s::int8[]) AS c(p, o) CROSS JOIN LATERAL"
            f" (SELECT * FROM headwater_log.t_{id} t WHERE t.partition = c.p"
            " AND t.last_offset >= c.o ORDER BY t.last_offset LIMIT %s) s"
            " ORDER BY s.partition, s.last_offset"
        )
        self.records_per_segment = 100.0


class PostgresLog:
    """The ``postgres`` log backend. Not thread-safe: one instance per thread."""

    backend = "postgres"

    def __init__(self, dsn: str) -> None:
        from headwater.storage.database import connect

        self.dsn = dsn
        self._conn = connect(dsn, autocommit=True)
        self._topics: dict[str, _Topic] = {}
        self._round_robin = count()

    # -- topics ------------------------------------------------------------------------

    def create_topic(self, spec: TopicSpec) -> None:
        """Create the topic, or check the existing one has the same partition count.

        Retention and compaction settings of an existing topic are updated.

        Raises:
            TopicMismatch: it exists with a different number of partitions.
        """
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(spec.name),))
            row = self._conn.execute(
                "SELECT id, partitions FROM headwater.topics WHERE name = %s", (spec.name,)
            ).fetchone()
            if row is not None:
                if row[1] != spec.partitions:
                    raise TopicMismatch(
                        f"topic {spec.name!r} exists with {row[1]} partitions, not "
                        f"{spec.partitions}; partition counts cannot change"
                    )
                self._conn.execute(
                    "UPDATE headwater.topics SET compacted = %s, retention_ms = %s,"
                    " retention_bytes = %s WHERE id = %s",
                    (spec.compacted, spec.retention_ms, spec.retention_bytes, row[0]),
                )
                topic_id = row[0]
            else:
                (topic_id,) = self._conn.execute(
                    "INSERT INTO headwater.topics"
                    " (name, partitions, compacted, retention_ms, retention_bytes)"
                    " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    (
                        spec.name,
                        spec.partitions,
                        spec.compacted,
                        spec.retention_ms,
                        spec.retention_bytes,
                    ),
                ).fetchone()  # type: ignore[misc]
                self._conn.execute(
                    "INSERT INTO headwater.log_partitions (topic_id, partition)"
                    " SELECT %s, generate_series(0, %s - 1)",
                    (topic_id, spec.partitions),
                )
                table = sql.Identifier("headwater_log", f"t_{topic_id}")
                self._conn.execute(
                    sql.SQL(
                        "CREATE TABLE {} (partition int4 NOT NULL, base_offset int8 NOT NULL,"
                        " last_offset int8 NOT NULL, record_count int4 NOT NULL,"
                        " max_ts_ms int8 NOT NULL, payload bytea NOT NULL,"
                        " PRIMARY KEY (partition, last_offset))"
                    ).format(table)
                )
                # Payloads are framed binary: compressing them costs CPU for little gain.
                self._conn.execute(
                    sql.SQL("ALTER TABLE {} ALTER COLUMN payload SET STORAGE EXTERNAL").format(
                        table
                    )
                )
        self._topics.pop(spec.name, None)

    def topics(self) -> list[TopicSpec]:
        rows = self._conn.execute(
            "SELECT name, partitions, compacted, retention_ms, retention_bytes"
            " FROM headwater.topics ORDER BY name"
        ).fetchall()
        return [TopicSpec(*r) for r in rows]

    def partitions(self, topic: str) -> list[PartitionInfo]:
        t = self._topic(topic)
        rows = self._conn.execute(
            "SELECT partition, start_offset, next_offset FROM headwater.log_partitions"
            " WHERE topic_id = %s ORDER BY partition",
            (t.id,),
        ).fetchall()
        return [PartitionInfo(p, s, e) for p, s, e in rows]

    def _topic(self, name: str, conn: Conn | None = None) -> _Topic:
        t = self._topics.get(name)
        if t is None:
            row = (
                (conn or self._conn)
                .execute(
                    "SELECT id, partitions, compacted FROM headwater.topics WHERE name = %s",
                    (name,),
                )
                .fetchone()
            )
            if row is None:
                raise TopicNotFound(f"topic {name!r} does not exist")
            t = self._topics[name] = _Topic(row[0], name, row[1], row[2])
        return t

    # -- append ------------------------------------------------------------------------

    def append(
        self, topic: str, records: Sequence[Record], *, conn: Conn | None = None
    ) -> list[tuple[int, int]]:
        """Append ``records`` in one transaction (or in ``conn``'s); see the module doc."""
        if not records:
            return []
        t = self._topic(topic, conn)
        now = int(time.time() * 1000)
        # One pass: choose each record's partition and frame it into that partition's
        # segment (a record's offset delta is its index in the segment).
        framer = SegmentFramer(now)
        parts = partitions_for([r.key for r in records], t.partitions, self._round_robin)
        add = framer.add
        placed = [add(p, r) for p, r in zip(parts, records, strict=True)]
        used = sorted(framer.counts)
        args = {"t": t.id, "p": used, "n": [framer.counts[p] for p in used], "channel": t.channel}
        c = conn if conn is not None else self._conn
        # In the caller's open transaction: no savepoint of its own (two round trips).
        own = c.transaction() if c.info.transaction_status == _IDLE else nullcontext()
        # A pipeline cannot COPY: there every append is the one statement.
        piped = c.pgconn.pipeline_status != pq.PipelineStatus.OFF
        with own:
            # Partition rows are locked in partition order (appenders never deadlock),
            # offsets reserved, the notification queued for the commit.
            if len(records) <= _SMALL_APPEND_RECORDS or piped:
                segs = framer.segments(dict.fromkeys(used, 0))
                args.update(ts=[s[4] for s in segs], payloads=[s[5] for s in segs])
                rows = c.execute(t.append_stmt, args, prepare=True).fetchall()
                bases = dict(rows)
            else:
                rows = c.execute(_LOCK_AND_RESERVE, args, prepare=True).fetchall()
                bases = {p: base for p, base, _ in rows}
                with c.cursor().copy(t.copy_stmt) as cp:
                    cp.write(encode_segment_rows(framer.segments(bases)))
        return [(p, bases[p] + i) for p, i in placed]

    # -- read --------------------------------------------------------------------------

    def read(
        self, topic: str, partition: int, offset: int, max_records: int = 1000
    ) -> list[LogRecord]:
        t = self._topic(topic)
        return _read(self._conn, t, {partition: offset}, max_records)

    def committed(self, group: str, topic: str) -> dict[int, int]:
        rows = self._conn.execute(
            "SELECT partition, next_offset FROM headwater.consumer_offsets"
            " WHERE group_name = %s AND topic = %s",
            (group, topic),
        ).fetchall()
        return dict(rows)

    def reader(self, group: str, topic: str) -> PostgresBatchReader:
        return PostgresBatchReader(self, group, topic)

    # -- maintenance -------------------------------------------------------------------

    def enforce_retention(self) -> RetentionReport:
        """Apply each topic's retention and compaction. Safe while producers and
        consumers work (each step is one transaction; appends only add segments).

        - ``retention_ms``: segments whose newest record is older go (segment
          granularity, as in Kafka).
        - ``retention_bytes``: a segment goes once the newer segments of its partition
          alone reach the limit (the newest segment always stays).
        - compacted topics: only the latest record per key is kept; tombstones go once
          older than ``retention_ms`` (24 h when unset). Compaction holds one
          partition's segments in memory at a time.
        """
        deleted = compacted = 0
        now = int(time.time() * 1000)
        rows = self._conn.execute(
            "SELECT name, compacted, retention_ms, retention_bytes FROM headwater.topics"
        ).fetchall()
        for name, is_compacted, retention_ms, retention_bytes in rows:
            t = self._topic(name)
            if is_compacted:
                for p in range(t.partitions):
                    compacted += self._compact(t, p, now - (retention_ms or 86_400_000))
            else:
                with self._conn.transaction():
                    if retention_ms:
                        cur = self._conn.execute(
                            sql.SQL(
                                "DELETE FROM {} WHERE max_ts_ms < %s RETURNING record_count"
                            ).format(t.table),
                            (now - retention_ms,),
                        )
                        deleted += sum(r[0] for r in cur.fetchall())
                    if retention_bytes:
                        cur = self._conn.execute(
                            sql.SQL(
                                "DELETE FROM {t} d USING (SELECT partition, last_offset, sum("
                                "length(payload)) OVER (PARTITION BY partition ORDER BY"
                                " last_offset DESC) - length(payload) AS newer FROM {t}) s"
                                " WHERE s.newer >= %s"
                                " AND d.partition = s.partition AND d.last_offset ="
                                " s.last_offset RETURNING d.record_count"
                            ).format(t=t.table),
                            (retention_bytes,),
                        )
                        deleted += sum(r[0] for r in cur.fetchall())
            self._conn.execute(
                sql.SQL(
                    "UPDATE headwater.log_partitions lp SET start_offset = coalesce("
                    "(SELECT min(base_offset) FROM {} r WHERE r.partition = lp.partition),"
                    " lp.next_offset) WHERE lp.topic_id = %s"
                ).format(t.table),
                (t.id,),
            )
        return RetentionReport(deleted=deleted, compacted=compacted)

    def _compact(self, t: _Topic, partition: int, tombstone_cutoff_ms: int) -> int:
        """Keep the latest record per key of one partition; returns records removed."""
        removed = 0
        with self._conn.transaction():
            segs = self._conn.execute(
                sql.SQL(
                    "SELECT base_offset, last_offset, payload FROM {} WHERE partition = %s"
                    " ORDER BY last_offset FOR UPDATE"
                ).format(t.table),
                (partition,),
                binary=True,
            ).fetchall()
            decoded = [(b, last, decode_segment(t.name, partition, b, pl)) for b, last, pl in segs]
            latest: dict[bytes, int] = {}
            for _, _, recs in decoded:
                for r in recs:
                    if r.key is not None:
                        latest[r.key] = r.offset
            for base, last, recs in decoded:
                keep = [
                    r
                    for r in recs
                    if r.key is None
                    or (
                        latest[r.key] == r.offset
                        and not (r.value is None and r.timestamp_ms < tombstone_cutoff_ms)
                    )
                ]
                if len(keep) == len(recs):
                    continue
                removed += len(recs) - len(keep)
                if keep:
                    self._conn.execute(
                        sql.SQL(
                            "UPDATE {} SET payload = %s, record_count = %s"
                            " WHERE partition = %s AND last_offset = %s"
                        ).format(t.table),
                        (reencode(base, keep), len(keep), partition, last),
                    )
                else:
                    self._conn.execute(
                        sql.SQL("DELETE FROM {} WHERE partition = %s AND last_offset = %s").format(
                            t.table
                        ),
                        (partition, last),
                    )
        return removed

    def close(self) -> None:
        self._conn.close()


class PostgresBatchReader:
    """Reads batches for one consumer group; see the module docstring for guarantees."""

    def __init__(self, log: PostgresLog, group: str, topic: str) -> None:
        from headwater.storage.database import connect

        self.log = log
        self.group = group
        self.topic = topic
        self._t = log._topic(topic)
        # A dedicated session holds this member's advisory-lock slot.
        self._session = connect(log.dsn, autocommit=True)
        self._class_key = _lock_key(f"{group}\x00{topic}")
        self._slot = self._take_slot()
        self._assigned: list[int] = []
        self._refreshed = 0.0
        self._session.execute(f"LISTEN {self._t.channel}")
        self._session.execute(
            "INSERT INTO headwater.consumer_offsets (group_name, topic, partition)"
            " SELECT %s, %s, generate_series(0, %s - 1) ON CONFLICT DO NOTHING",
            (group, topic, self._t.partitions),
        )

    def _take_slot(self) -> int:
        for slot in range(_MAX_SLOTS):
            row = self._session.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (self._class_key, slot)
            ).fetchone()
            if row and row[0]:
                return slot
        raise LogError(f"more than {_MAX_SLOTS} workers in group {self.group!r}")

    def assigned(self) -> list[int]:
        """The partitions this member should work on (refreshed every 0.5 s)."""
        now = time.monotonic()
        if now - self._refreshed > _MEMBERSHIP_REFRESH_S:
            rows = self._session.execute(
                "SELECT objid::int8 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND objsubid = 2 AND classid::int8 = %s AND database = (SELECT oid FROM"
                " pg_database WHERE datname = current_database()) ORDER BY objid::int8",
                (self._class_key & 0xFFFFFFFF,),
            ).fetchall()
            slots = [r[0] for r in rows]
            rank = slots.index(self._slot) if self._slot in slots else 0
            n = max(len(slots), 1)
            self._assigned = [p for p in range(self._t.partitions) if p % n == rank]
            self._refreshed = now
        return self._assigned

    def next_batch(self, conn: Conn, max_events: int, max_wait_ms: int) -> Batch | None:
        """Claim this member's free partitions (row locks in ``conn``'s transaction)
        and read up to ``max_events`` records; linger up to ``max_wait_ms`` after the
        first record for the batch to fill. None when nothing is claimable, or nothing
        new arrived within about 0.2 s (an append's notification ends the wait at once).
        """
        parts = self.assigned()
        claimed = conn.execute(
            "SELECT partition, next_offset FROM headwater.consumer_offsets"
            " WHERE group_name = %s AND topic = %s AND partition = ANY(%s)"
            " ORDER BY partition FOR UPDATE SKIP LOCKED",
            (self.group, self.topic, parts),
        ).fetchall()
        if not claimed:
            return None
        start = dict(claimed)
        pos = dict(start)
        records: list[LogRecord] = []
        deadline: float | None = None
        idle_deadline = time.monotonic() + max(max_wait_ms / 1000, _IDLE_WAIT_S)
        self._wait_for_append(0)  # what was notified so far, the next read sees
        while True:
            got = _read(conn, self._t, pos, max_events - len(records))
            if got:
                records.extend(got)
                for r in got:
                    pos[r.partition] = r.offset + 1
                if deadline is None:
                    deadline = time.monotonic() + max_wait_ms / 1000
            now = time.monotonic()
            if len(records) >= max_events:
                break
            until = idle_deadline if deadline is None else deadline
            if now >= until:
                break
            self._wait_for_append(until - now)
        if not records:
            return None
        return Batch(self.topic, records, start)

    def _wait_for_append(self, timeout_s: float) -> None:
        """Return once an append to this topic committed (its notification), or
        after ``timeout_s``; with 0, only drain the notifications already received.
        A notification is a hint: the caller reads again either way."""
        if timeout_s <= 0:
            for _ in self._session.notifies(timeout=0):
                pass
            return
        for _ in self._session.notifies(timeout=timeout_s, stop_after=1):
            pass

    def commit(
        self, conn: Conn, batch: Batch, positions: Mapping[int, str | None] | None = None
    ) -> None:
        ends: dict[int, int] = {}
        for r in batch.records:
            ends[r.partition] = r.offset + 1
        parts = sorted(ends)
        pos = [(positions or {}).get(p) for p in parts]
        moved = conn.execute(
            "UPDATE headwater.consumer_offsets c SET next_offset = v.n,"
            " position = coalesce(v.pos, c.position), updated_at = now()"
            " FROM unnest(%s::int4[], %s::int8[], %s::int8[], %s::text[]) AS v(p, s, n, pos)"
            " WHERE c.group_name = %s AND c.topic = %s AND c.partition = v.p"
            " AND c.next_offset = v.s RETURNING c.partition",
            (
                parts,
                [batch.start_offsets[p] for p in parts],
                [ends[p] for p in parts],
                pos,
                self.group,
                self.topic,
            ),
        ).fetchall()  # (rows, not rowcount: this also works in a pipeline)
        if len(moved) != len(parts):
            raise FencedError(
                f"offsets of group {self.group!r} on {self.topic!r} moved during the batch"
            )

    def after_commit(self, batch: Batch) -> None:
        pass

    def after_rollback(self) -> None:
        pass

    def close(self) -> None:
        self._session.close()


def _read(conn: Conn, t: _Topic, offsets: Mapping[int, int], limit: int) -> list[LogRecord]:
    """Up to about ``limit`` records from each partition's offset on, in offset order
    per partition. Fetches whole segments, sized by the records per segment seen."""
    if limit <= 0 or not offsets:
        return []
    per = max(1, -(-limit // len(offsets)))
    n_seg = max(1, min(1024, -(-per // max(1, int(t.records_per_segment)))))
    rows = conn.execute(
        t.read_stmt,
        (list(offsets), list(offsets.values()), n_seg),
        binary=True,
        prepare=True,
    ).fetchall()
    out: list[LogRecord] = []
    taken: dict[int, int] = {}
    seen = 0
    for p, base, n_records, payload in rows:
        seen += n_records
        have = taken.get(p, 0)
        if have >= per:
            continue
        recs = decode_segment(t.name, p, base, payload, offsets[p], per - have)
        taken[p] = have + len(recs)
        out.extend(recs)
    if rows:
        t.records_per_segment = 0.7 * t.records_per_segment + 0.3 * (seen / len(rows))
    return out


def _lock_key(name: str) -> int:
    """A signed 32-bit advisory-lock key for a name."""
    v = zlib.crc32(name.encode())
    return v - (1 << 32) if v & 0x80000000 else v


__all__ = ["PostgresBatchReader", "PostgresLog"]
