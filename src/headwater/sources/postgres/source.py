"""The PostgreSQL CDC source: publication + logical slot (pgoutput) → one topic per table.

Start-up protocol (numbered; everything else relies on this order):

1. Check the server (``wal_level``, REPLICATION) and the tables (exist, readable, keyed).
2. Create or extend publication ``headwater_<name>`` (before the slot: pgoutput reads
   the publication as of each change's time).
3. Slot ``headwater_<name>``:
   - missing and never created: ``CREATE_REPLICATION_SLOT ... LOGICAL pgoutput
     (SNAPSHOT 'export')``; the source state is saved at once (so a later loss of the
     slot is detected), and the snapshot reads the exported snapshot
     (``SET TRANSACTION SNAPSHOT`` in a REPEATABLE READ transaction): the snapshot
     holds exactly the commits before the slot's consistent point and the stream
     exactly those after it — no gap, no overlap.
   - missing after it existed, or invalidated (behind the retained WAL): refuse with
     :class:`SourceError` and say how to re-snapshot (:meth:`PostgresSource.reset`).
   - present: continue (and finish an interrupted snapshot first).
4. Snapshot, per table in primary-key chunks of ``chunk_rows``, as ``op = "r"`` events;
   progress is saved per chunk. A crashed snapshot resumes at the next chunk with a
   *new* snapshot (the exported one died with its connection). Rows of the remaining
   chunks may then show states newer than the slot's start; the stream replays every
   change since that start afterwards, so a consumer that upserts by key converges to
   the source exactly. No row is missed.
5. Stream: ``START_REPLICATION`` (proto_version 1) from the slot's confirmed position.
   Events are grouped per transaction; complete transactions are appended in batches
   (``batch_max_rows`` / ``batch_max_ms``), and **only after the append returned** is
   the commit's end LSN confirmed with ``send_feedback(flush_lsn=...)``.

Delivery guarantee (:attr:`PostgresSource.guarantee`):

- On the ``postgres`` log, every append of a batch and the source's position commit in
  one transaction of Headwater's database; after a crash the slot resends what was
  not confirmed and the source drops transactions at or below the stored position:
  **exactly-once** into the log (snapshot chunks included).
- On other logs (Kafka): **at-least-once**; a crash between append and confirmation
  repeats the transactions of that batch (whole transactions, same order).

Events of one table keep source commit order per key (one topic per table,
``<topic_prefix>.<schema>.<table>``, partitioned by the primary-key JSON). Each record
has headers ``position`` (the commit's end LSN, e.g. ``0/16B3748``: every change up to
it is in the log — compare with ``pg_current_wal_lsn()`` for read-your-writes) and
``txid``. TRUNCATE is written to every partition of the table's topic (keys
``{"__truncate":n}``) so that each partition's consumer sees it in order.

Keepalives: psycopg2 answers the server's keepalive requests inside ``read_message``;
when everything received was confirmed, it forwards the confirmed position to the
keepalive's WAL end, which acts as the heartbeat that lets an idle slot release WAL
(the walsender never sends a keepalive position past a commit it is still sending).
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

import psycopg
from psycopg import sql

from headwater.errors import SourceError
from headwater.log.base import Conn, Log, Record, TopicSpec
from headwater.log.partitioner import key_per_partition
from headwater.sources.postgres import envelope as env
from headwater.sources.postgres.catalog import (
    TableInfo,
    check_server,
    ensure_publication,
    register_types,
    resolve_table,
)
from headwater.sources.postgres.pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    Relation,
    Truncate,
    Type,
    Update,
    decode,
    format_lsn,
    parse_lsn,
)
from headwater.sources.postgres.values import SESSION_OPTIONS, ValueDecoder
from headwater.sources.progress import SnapshotProgress
from headwater.sources.state import SourceState, delete_state, load_state, save_state
from headwater.storage.database import mask_dsn

log = logging.getLogger(__name__)

Guarantee = Literal["exactly-once", "at-least-once"]
_LINGER_S = 0.002
# Idle feedback reports the position keepalives moved the slot to (past WAL of other
# tables and databases); a read-your-writes wait after such WAL lasts up to this long.
_FEEDBACK_S = 0.5


def _ident(name: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", name.lower())[:50]


def slot_name(source: str) -> str:
    """The replication slot (and publication) of the source named ``source``."""
    return f"headwater_{_ident(source)}"


def slot_lag_bytes(src: Conn, slot: str) -> int | None:
    """WAL bytes ``slot`` retains beyond its confirmed position (None: no such slot)."""
    row = src.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8"
        " FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


class PostgresSource:
    """Captures ``tables`` of the PostgreSQL database at ``dsn`` into ``log``.

    Args:
        name: the source's name (slot and publication are ``headwater_<name>``).
        dsn: libpq DSN/URI of the source database (its user needs REPLICATION).
        tables: ``schema.table`` or ``table`` (schema public).
        log: where events go; topics are created with ``partitions`` partitions.
        topic_prefix: topic names are ``<topic_prefix>.<schema>.<table>`` (default:
            ``name``).
        state_dsn: Headwater's database for ``headwater.source_state``; defaults to
            the log's database on the postgres log (required otherwise).

    Not thread-safe, except :meth:`stop`, which may be called from any thread.
    """

    def __init__(
        self,
        name: str,
        dsn: str,
        tables: Sequence[str],
        log: Log,
        topic_prefix: str | None = None,
        *,
        state_dsn: str | None = None,
        partitions: int = 3,
        chunk_rows: int = 10_000,
        batch_max_rows: int = 5_000,
        batch_max_ms: int = 50,
    ) -> None:
        self.name = name
        self.dsn = dsn
        self.table_specs = list(tables)
        self.log = log
        self.topic_prefix = topic_prefix or name
        self.slot = self.publication = slot_name(name)
        self.partitions = partitions
        self.chunk_rows = chunk_rows
        self.batch_max_rows = batch_max_rows
        self.batch_max_ms = batch_max_ms
        self._joint = log.backend == "postgres"
        self.guarantee: Guarantee = "exactly-once" if self._joint else "at-least-once"
        if state_dsn is None:
            state_dsn = getattr(log, "dsn", None)
            if state_dsn is None:
                raise SourceError(f"source {name!r}: state_dsn is required with this log")
        self.state_dsn: str = state_dsn
        self.stop_event = threading.Event()
        self._where = f"source {name!r} ({mask_dsn(dsn)})"
        self._decoder = ValueDecoder()
        self._tables: dict[int, TableInfo] = {}
        self._shapes: dict[int, env.TableShape] = {}
        self._trunc_keys = key_per_partition(partitions)
        self._db = ""
        self._state: SourceState | None = None
        self._state_conn: Conn | None = None
        # streaming
        self._tx: Begin | None = None
        self._tx_rows: list[tuple[str, bytes | None, bytes]] = []
        self._ready: list[tuple[str, Record]] = []
        self._ready_end = 0
        self._ready_since = 0.0
        self._durable = 0
        self._fragments: dict[int, tuple[env.TableShape, bytes]] = {}
        self._now_ms = 0
        self.stats = {"snapshot_rows": 0, "events": 0, "transactions": 0, "skipped_tx": 0}

    # -- public -----------------------------------------------------------------------

    def topic_for(self, schema: str, table: str) -> str:
        return f"{self.topic_prefix}.{schema}.{table}"

    def run(self) -> None:
        """Set up, snapshot if needed, then stream until :meth:`stop`.

        Raises:
            SourceError: a refusal of the start-up protocol (see the module doc), or
                the slot was dropped/invalidated while streaming.
        """
        self._state_conn = psycopg.connect(self.state_dsn, autocommit=True)
        try:
            self._prepare()
            if self.stop_event.is_set():
                return
            self._stream()
        finally:
            self._state_conn.close()
            self._state_conn = None

    def stop(self) -> None:
        """Ask :meth:`run` to append the complete transactions it holds, confirm them
        and return (within about 0.1 s of its current append)."""
        self.stop_event.set()

    def reset(self) -> None:
        """Drop the slot and forget the state: the next :meth:`run` re-snapshots.

        Use after the slot was lost. Events already in the log stay; the new snapshot
        re-sends every row as ``op = "r"`` (consumers upsert, so they converge).
        """
        with psycopg.connect(self.dsn, autocommit=True) as src:
            row = src.execute(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                (self.slot,),
            ).fetchone()
            if row is not None:
                if row[0] is not None:
                    raise SourceError(f"{self._where}: slot {self.slot} is in use by pid {row[0]}")
                src.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
        with psycopg.connect(self.state_dsn, autocommit=True) as st:
            delete_state(st, self.name)

    def close(self) -> None:
        """Nothing to release: :meth:`run` and :meth:`reset` close their connections."""

    def slot_lag_bytes(self) -> int | None:
        """WAL bytes the slot retains beyond its confirmed position (None: no slot)."""
        with psycopg.connect(self.dsn, autocommit=True) as src:
            return slot_lag_bytes(src, self.slot)

    # -- start-up ---------------------------------------------------------------------

    def _prepare(self) -> None:
        """Steps 1-4 of the protocol."""
        assert self._state_conn is not None
        with psycopg.connect(self.dsn, autocommit=True, options=SESSION_OPTIONS) as src:
            check_server(src, self._where)
            infos = [resolve_table(src, t, self._where) for t in self.table_specs]
            self._db = str(src.info.dbname)
            for oid, tname, elem in register_types(src, {o for t in infos for o in t.type_oids}):
                self._decoder.register_type(oid, tname, elem)
            ensure_publication(src, self.publication, infos, self._where)
            slot = src.execute(
                "SELECT plugin, database, confirmed_flush_lsn::text, wal_status, active_pid"
                " FROM pg_replication_slots WHERE slot_name = %s",
                (self.slot,),
            ).fetchone()
        self._tables = {t.relid: t for t in infos}
        for t in infos:
            self.log.create_topic(TopicSpec(self.topic_for(t.schema, t.table), self.partitions))
        state = load_state(self._state_conn, self.name)
        self._state = state
        reset_hint = (
            f"To re-snapshot: stop Headwater, run `headwater resnapshot {self.name}` (drops"
            f" slot {self.slot} if present and the stored position; Python:"
            " PostgresSource.reset()), then start again; every row is re-sent as op 'r'."
        )
        if slot is None:
            if state is not None and state.state.get("slot"):
                raise SourceError(
                    f"{self._where}: replication slot {self.slot} was dropped while the source"
                    f" was stopped (last durable position {state.position}); changes since"
                    f" then cannot be recovered from it. {reset_hint}"
                )
            self._create_slot_and_snapshot()
            return
        plugin, db, confirmed, wal_status, active_pid = slot
        if plugin != "pgoutput" or db != self._db:
            raise SourceError(
                f"{self._where}: slot {self.slot} exists for plugin {plugin!r} on database"
                f" {db!r}, not pgoutput on {self._db!r}; drop it or rename the source"
            )
        if wal_status == "lost":
            raise SourceError(
                f"{self._where}: replication slot {self.slot} was invalidated (the WAL it"
                " needed was removed, see max_slot_wal_keep_size); changes since"
                f" {confirmed} are gone. {reset_hint}"
            )
        if active_pid is not None:
            raise SourceError(
                f"{self._where}: slot {self.slot} is in use by server pid {active_pid}"
                " (another Headwater process runs this source?)"
            )
        if state is None:
            state = self._state = SourceState(self.name, "postgres", state={"slot": self.slot})
            save_state(self._state_conn, state)
        if not state.snapshot_done:
            self._snapshot(None, confirmed)

    def _create_slot_and_snapshot(self) -> None:
        assert self._state_conn is not None
        rconn = _replication_connect(self.dsn, self._where)
        try:
            cur = rconn.cursor()
            try:
                cur.execute(
                    f"CREATE_REPLICATION_SLOT {self.slot} LOGICAL pgoutput (SNAPSHOT 'export')"
                )
            except Exception as exc:
                raise SourceError(f"{self._where}: cannot create slot {self.slot}: {exc}") from None
            _, consistent, snapshot_name, _ = cur.fetchone()
            state = self._state = SourceState(
                self.name,
                "postgres",
                state={"slot": self.slot, "slot_lsn": consistent},
            )
            save_state(self._state_conn, state)
            self._snapshot(snapshot_name, consistent, on_imported=rconn.close)
        finally:
            rconn.close()

    # -- snapshot ---------------------------------------------------------------------

    def _snapshot(self, exported: str | None, lsn_text: str, on_imported: Any = None) -> None:
        """Step 4: chunked, resumable snapshot as op 'r' events (see the module doc)."""
        assert self._state is not None
        st = self._state
        lsn = parse_lsn(lsn_text)
        with psycopg.connect(self.dsn, options=SESSION_OPTIONS) as src:
            src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            src.read_only = True
            if exported is not None:
                src.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(exported)))
                if on_imported is not None:
                    on_imported()  # the exporter may go: our transaction holds the snapshot
            for info in self._tables.values():
                if self.stop_event.is_set():
                    return
                self._snapshot_table(src, info, lsn, lsn_text)
            src.rollback()
        st.snapshot_done = True
        st.position = st.position or lsn_text
        save_state(self._require_conn(), st)

    def _snapshot_table(self, src: Conn, info: TableInfo, lsn: int, lsn_text: str) -> None:
        assert self._state is not None
        st = self._state
        prog = st.snapshot_progress.setdefault(
            info.qualified, {"done": False, "last_key": None, "rows": 0}
        )
        if prog["done"]:
            return
        if "estimate" not in prog:
            row = src.execute(
                "SELECT greatest(reltuples, 0)::int8 FROM pg_class WHERE oid = %s", (info.relid,)
            ).fetchone()
            prog["estimate"] = int(row[0]) if row else 0
        progress = SnapshotProgress(self.name, info.qualified, prog["estimate"], prog["rows"])
        key_index = tuple(info.columns.index(k) for k in info.key)
        shape = env.make_shape(
            info.relid,
            info.schema,
            info.table,
            info.columns,
            info.type_oids,
            key_index,
            self._decoder,
        )
        topic = self.topic_for(info.schema, info.table)
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in info.columns)
        if info.key:
            key_cols = sql.SQL(", ").join(sql.Identifier(k) for k in info.key)
            casts = sql.SQL(", ").join(
                sql.SQL("%s::{}").format(sql.SQL(info.type_names[info.columns.index(k)]))
                for k in info.key
            )
            first = sql.SQL("COPY (SELECT {} FROM {} ORDER BY {} LIMIT {}) TO STDOUT").format(
                cols, info.ident, key_cols, self.chunk_rows
            )
            nxt = sql.SQL(
                "COPY (SELECT {} FROM {} WHERE ({}) > ({}) ORDER BY {} LIMIT {}) TO STDOUT"
            ).format(cols, info.ident, key_cols, casts, key_cols, self.chunk_rows)
        else:
            first = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(cols, info.ident)
            nxt = first
        headers = {"position": lsn_text}
        now_ms = int(time.time() * 1000)
        while not self.stop_event.is_set():
            last = prog["last_key"]
            cur = src.cursor()
            records: list[Record] = []
            last_row: tuple[Any, ...] | None = None
            with cur.copy(nxt if last is not None else first, last) as cp:
                for row in cp.rows():
                    vals = [None if v is None else v.encode() for v in row]
                    after, _ = env.convert_row(shape, vals)
                    ev = env.change_event(
                        op="r",
                        shape=shape,
                        before=None,
                        after=after,
                        source_name=self.name,
                        db=self._db,
                        lsn=lsn,
                        tx_id=None,
                        commit_ts_ms=now_ms,
                        snapshot=True,
                    )
                    records.append(
                        Record(env.record_key(shape, after), env.encode(ev), headers, now_ms)
                    )
                    last_row = row
            if last_row is not None and info.key:
                prog["last_key"] = [last_row[i] for i in key_index]
            prog["rows"] += len(records)
            prog["done"] = len(records) < self.chunk_rows or not info.key
            self._commit({topic: records}, None)
            self.stats["snapshot_rows"] += len(records)
            progress.advance(len(records))
            if prog["done"]:
                progress.finish()
                return

    # -- durable append ---------------------------------------------------------------

    def _require_conn(self) -> Conn:
        assert self._state_conn is not None
        return self._state_conn

    def _commit(self, by_topic: dict[str, list[Record]], position: str | None) -> None:
        """Append ``by_topic`` and save the state (with ``position``): one transaction
        on the postgres log, append-then-save otherwise."""
        st = self._state
        assert st is not None
        conn = self._require_conn()
        if position is not None:
            st.position = position
        if self._joint:
            with conn.transaction():
                for topic, recs in by_topic.items():
                    if recs:
                        self.log.append(topic, recs, conn=conn)
                save_state(conn, st)
        else:
            for topic, recs in by_topic.items():
                if recs:
                    self.log.append(topic, recs)
            save_state(conn, st)

    # -- streaming --------------------------------------------------------------------

    def _stream(self) -> None:
        assert self._state is not None
        self._durable = parse_lsn(self._state.position) if self._state.position else 0
        rconn = _replication_connect(self.dsn, self._where)
        try:
            cur = rconn.cursor()
            try:
                cur.start_replication(
                    slot_name=self.slot,
                    decode=False,
                    options={"proto_version": "1", "publication_names": self.publication},
                )
            except Exception as exc:
                raise self._slot_error(exc) from None
            last_feedback = time.monotonic()
            while not self.stop_event.is_set():
                try:
                    msg = cur.read_message()
                except Exception as exc:
                    raise self._slot_error(exc) from None
                now = time.monotonic()
                if msg is not None:
                    self._on_message(msg.payload)
                    if self._ready and (
                        len(self._ready) >= self.batch_max_rows
                        or now - self._ready_since >= self.batch_max_ms / 1000
                    ):
                        self._flush(cur)
                    continue
                if self._ready:
                    # A backlog arrives in socket-sized pieces: linger briefly for more
                    # before paying an append (and its fsync) for a partial batch.
                    left = self.batch_max_ms / 1000 - (now - self._ready_since)
                    if left > 0:
                        with contextlib.suppress(InterruptedError):
                            readable, _, _ = select.select([rconn], [], [], min(_LINGER_S, left))
                            if readable:
                                continue
                    self._flush(cur)
                    last_feedback = now
                elif now - last_feedback >= _FEEDBACK_S:
                    cur.send_feedback(force=True)
                    last_feedback = now
                with contextlib.suppress(InterruptedError):
                    select.select([rconn], [], [], 0.1)
            if self._ready:
                self._flush(cur)
        finally:
            rconn.close()

    def _slot_error(self, exc: Exception) -> SourceError:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return SourceError(
            f"{self._where}: replication from slot {self.slot} failed: {text}. If the slot"
            f" was dropped or invalidated, `headwater resnapshot {self.name}`"
            " (PostgresSource.reset()) and a new start re-snapshot the tables."
        )

    def _flush(self, cur: Any) -> None:
        by_topic: dict[str, list[Record]] = {}
        for topic, rec in self._ready:
            by_topic.setdefault(topic, []).append(rec)
        end = self._ready_end
        self._commit(by_topic, format_lsn(end))
        # Only now, with the events durable, may the slot move past them.
        cur.send_feedback(write_lsn=end, flush_lsn=end, force=True)
        self._durable = end
        self._ready = []

    def _on_message(self, payload: bytes) -> None:
        m = decode(payload)
        t = type(m)
        if t is Insert:
            assert isinstance(m, Insert)
            shape = self._shapes[m.relid]
            after, missing = env.convert_row(shape, m.new)
            self._emit(shape, "c", None, after, missing)
        elif t is Update:
            assert isinstance(m, Update)
            shape = self._shapes[m.relid]
            before = None
            if m.old is not None:
                if m.old_kind == "O":
                    before, _ = env.convert_row(shape, m.old)
                else:
                    before = env.key_only(shape, m.old)
            after, missing = env.convert_row(shape, m.new, before if m.old_kind == "O" else None)
            if before is not None and env.record_key(shape, before) != env.record_key(shape, after):
                # The key changed: a delete under the old key and a create under the new
                # one, so each key's partition sees its own history (as Debezium does).
                self._emit(shape, "d", before, None, ())
                self._emit(shape, "c", None, after, missing)
            else:
                self._emit(shape, "u", before, after, missing)
        elif t is Delete:
            assert isinstance(m, Delete)
            shape = self._shapes[m.relid]
            if m.old_kind == "O":
                before, _ = env.convert_row(shape, m.old)
            else:
                before = env.key_only(shape, m.old)
            self._emit(shape, "d", before, None, ())
        elif t is Begin:
            assert isinstance(m, Begin)
            self._tx = m
            self._tx_rows = []
            self._fragments.clear()  # the source block names the transaction
            self._now_ms = int(time.time() * 1000)
        elif t is Commit:
            assert isinstance(m, Commit)
            self._on_commit(m)
        elif t is Relation:
            assert isinstance(m, Relation)
            info = self._tables.get(m.relid)
            key = info.key if info is not None and m.replica_identity == "f" else None
            shape = env.shape_of(m, self._decoder, key)
            self._shapes[m.relid] = shape
            assert self._state is not None
            self._state.state.setdefault("schema_versions", {})[shape.qualified] = shape.version
        elif t is Type:
            assert isinstance(m, Type)
            self._decoder.register_type(m.oid, m.name)
        elif t is Truncate:
            assert isinstance(m, Truncate)
            for relid in m.relids:
                shape = self._shapes[relid]
                ev = self._event(shape, "t", None, None, ())
                topic = self.topic_for(shape.schema, shape.table)
                for k in self._trunc_keys:
                    self._tx_rows.append((topic, k, ev))
        # Origin and logical messages carry nothing to capture.

    def _event(
        self,
        shape: env.TableShape,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        missing: Sequence[str],
    ) -> bytes:
        tx = self._tx
        assert tx is not None
        frag = self._fragments.get(shape.relid)
        if frag is None or frag[0] is not shape:
            src = env.source_fragment(
                shape,
                source_name=self.name,
                db=self._db,
                lsn=tx.final_lsn,
                tx_id=tx.xid,
                commit_ts_ms=tx.commit_ts_us // 1000,
                snapshot=False,
            )
            frag = self._fragments[shape.relid] = (shape, src)
        return env.encode_change(op, before, after, frag[1], self._now_ms, missing)

    def _emit(
        self,
        shape: env.TableShape,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        missing: Sequence[str],
    ) -> None:
        value = self._event(shape, op, before, after, missing)
        key = env.record_key(shape, after if after is not None else before)
        self._tx_rows.append((self.topic_for(shape.schema, shape.table), key, value))

    def _on_commit(self, c: Commit) -> None:
        tx = self._tx
        self._tx = None
        rows, self._tx_rows = self._tx_rows, []
        if c.end_lsn <= self._durable:
            self.stats["skipped_tx"] += 1  # appended before a crash, not yet confirmed
            return
        if not rows:
            return
        headers = {"position": format_lsn(c.end_lsn), "txid": str(tx.xid if tx else "")}
        ts = c.commit_ts_us // 1000
        if not self._ready:
            self._ready_since = time.monotonic()
        self._ready.extend((topic, Record(k, v, headers, ts)) for topic, k, v in rows)
        self._ready_end = c.end_lsn
        self.stats["events"] += len(rows)
        self.stats["transactions"] += 1


def _replication_connect(dsn: str, where: str) -> Any:
    try:
        import psycopg2  # type: ignore[import-untyped]
        import psycopg2.extras  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise SourceError("psycopg2 is missing: pip install psycopg2-binary==2.9.13") from exc
    try:
        return psycopg2.connect(
            dsn,
            connection_factory=psycopg2.extras.LogicalReplicationConnection,
            options=SESSION_OPTIONS,
        )
    except psycopg2.OperationalError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
        raise SourceError(f"{where}: replication connection refused: {text}") from None


__all__ = ["Guarantee", "PostgresSource"]
