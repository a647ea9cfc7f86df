"""The MySQL/MariaDB change-data-capture source.

Protocol (one source, one process at a time):

1. **Preflight** (:func:`~.checks.check_server`): ``log_bin=ON``, ``binlog_format=ROW``,
   ``binlog_row_image=FULL``, ``binlog_row_metadata=FULL``; every captured table exists
   and has a primary key. Otherwise :class:`~headwater.errors.SourceError`.
2. **Snapshot** (first start): open a consistent snapshot and read its binlog position
   P (:mod:`.snapshot`); store P as the stream's start, then read each table in
   primary-key chunks as ``op="r"`` events. Each chunk is appended together with the
   table's progress (last key) in one PostgreSQL transaction.
3. **Stream** from P: whole binlog transactions become events; several transactions
   are appended per flush, and the position after the last of them is written in the
   same PostgreSQL transaction as the append.

Guarantees with the ``postgres`` log backend (``delivery = "exactly-once"``): the log
holds every committed change of the captured tables after P exactly once, in binlog
(commit) order per key, and the stored position is always exactly the end of what the
log holds, because both commit together; a crash at any moment resumes from that
position with no loss and no duplicate. A transaction is never split across appends.
The snapshot and the stream meet at P with no gap and no overlap.

A crash *during* the snapshot resumes it from the last stored key per table in a new
consistent view taken later (P'), and streaming still starts at P. Rows of the part
read after the crash then appear as of P' and are followed by the stream's changes
since P, some of which they already contain; since every change event carries the
full row, applying events per key in log order still ends at the source's state (a
reader may briefly see an older version of such a row). Rows read before the crash
are exact.

With another log backend (Kafka) the append is made durable first and the position
is stored afterwards in PostgreSQL: ``delivery = "at-least-once"`` (a crash between
the two re-appends the last flush).

Refusals: the binlog file to resume from was purged → SourceError telling how to take
a new snapshot (:meth:`MySQLSource.reset`).
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from headwater.errors import SourceError
from headwater.log.base import Conn, Log, Record, TopicSpec
from headwater.sources.progress import SnapshotProgress

from . import checks, snapshot, state
from .envelope import SourceInfo, change_record, topic_name
from .position import BinlogPosition
from .settings import MySQLSettings
from .stream import BinlogReader, Committed, Idle
from .values import json_safe

log = logging.getLogger(__name__)

Delivery = Literal["exactly-once", "at-least-once"]


class MySQLSource:
    """Captures ``tables`` (``"db.table"``) of a MySQL/MariaDB server into ``log``.

    Topics are ``<topic_prefix>.<db>.<table>`` with ``partitions`` partitions each.
    State lives in Headwater's PostgreSQL at ``state_dsn`` (default: the postgres log's
    own database). Not thread-safe; :meth:`run` may be stopped from another thread
    through its ``stop`` event.
    """

    connector = "mysql"

    def __init__(
        self,
        name: str,
        connection: MySQLSettings | str,
        tables: Sequence[str],
        log: Log,
        topic_prefix: str,
        *,
        state_dsn: str | None = None,
        server_id: int | None = None,
        partitions: int = 3,
        snapshot_chunk: int = 5000,
        flush_events: int = 5000,
        flush_ms: int = 50,
        heartbeat_s: float = 0.5,
    ) -> None:
        self.name = name
        self.settings = (
            connection
            if isinstance(connection, MySQLSettings)
            else MySQLSettings.from_dsn(connection)
        )
        for t in tables:
            if t.count(".") != 1:
                raise SourceError(f"mysql source {name}: table {t!r} must be written 'db.table'")
        self.tables = list(dict.fromkeys(tables))
        self.log = log
        self.topic_prefix = topic_prefix
        self.partitions = partitions
        self.snapshot_chunk = snapshot_chunk
        self.flush_events = flush_events
        self.flush_ms = flush_ms
        self.heartbeat_s = heartbeat_s
        # A replica's server id must be unique among the server's replicas.
        self.server_id = server_id or 10_000 + zlib.crc32(name.encode()) % 1_000_000_000
        dsn = state_dsn or getattr(log, "dsn", None)
        if dsn is None:
            raise SourceError(
                f"mysql source {name}: no PostgreSQL for the source's position; pass state_dsn"
            )
        self._state_dsn: str = dsn
        self._atomic = getattr(log, "backend", None) == "postgres" and state_dsn is None
        self.delivery: Delivery = "exactly-once" if self._atomic else "at-least-once"
        self._pg: Conn | None = None
        self._reader: BinlogReader | None = None
        self.position: BinlogPosition | None = None
        self.gtid: str | None = None

    # -- connections --------------------------------------------------------------------

    def _mysql(self) -> Any:
        import pymysql  # type: ignore[import-untyped]

        try:
            return pymysql.connect(autocommit=True, **self.settings.pymysql_kwargs())
        except pymysql.err.OperationalError as exc:
            raise SourceError(
                f"mysql source {self.name}: cannot connect to {self.settings.describe()}: "
                f"{exc.args[-1] if exc.args else exc}"
            ) from None

    def _state(self) -> Conn:
        if self._pg is None:
            from headwater.storage.database import connect

            self._pg = connect(self._state_dsn, autocommit=True)
        return self._pg

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Preflight, create the topics, take or finish the snapshot.

        Raises:
            SourceError: the server or a table cannot be captured, or the stored position
                is no longer on the server.
        """
        my = self._mysql()
        try:
            checks.check_server(my, self.settings.describe())
            keys = {t: snapshot.primary_key(my, *t.split(".", 1)) for t in self.tables}
        finally:
            my.close()
        for t in self.tables:
            self.log.create_topic(TopicSpec(self._topic(t), partitions=self.partitions))
        pg = self._state()
        current = state.load(pg, self.name)
        if current is None or not current.snapshot_done:
            self._snapshot(keys, fresh=current is None)
            current = state.load(pg, self.name)
            assert current is not None
        my = self._mysql()
        try:
            checks.check_position_available(
                my, current.position, self.settings.describe(), self._reset_hint()
            )
        finally:
            my.close()
        self.position, self.gtid = current.position, current.gtid

    def reset(self) -> None:
        """Forget the stored position and snapshot progress: the next start snapshots."""
        state.reset(self._state(), self.name)

    def _reset_hint(self) -> str:
        return (
            f"stop Headwater, run `headwater resnapshot {self.name}` (Python:"
            " MySQLSource.reset()), then start it again; every row is re-sent as op 'r'"
        )

    def _topic(self, table: str) -> str:
        db, tbl = table.split(".", 1)
        return topic_name(self.topic_prefix, db, tbl)

    # -- snapshot -----------------------------------------------------------------------

    def _snapshot(self, keys: dict[str, list[str]], fresh: bool) -> None:
        pg = self._state()
        my = self._mysql()
        try:
            view = snapshot.open_consistent_snapshot(my)
            if fresh:
                with pg.transaction():
                    state.begin_snapshot(pg, self.name, view, self.tables)
            start = state.load(pg, self.name)
            assert start is not None
            done = state.progress(pg, self.name)
            log.info(
                "mysql source %s: snapshot at %s (stream starts at %s)",
                self.name,
                view,
                start.position,
            )
            for table in self.tables:
                progress = done.get(table)
                if progress is not None and progress.done:
                    continue
                last = progress.last_key if progress is not None else None
                before = progress.rows_read if progress is not None else 0
                self._snapshot_table(my, pg, table, keys[table], last, view, before)
            with pg.transaction():
                state.finish_snapshot(pg, self.name)
            my.query("COMMIT")
        finally:
            my.close()

    def _snapshot_table(
        self,
        my: Any,
        pg: Conn,
        table: str,
        pk: list[str],
        last: list[Any] | None,
        view: BinlogPosition,
        rows_before: int = 0,
    ) -> None:
        db, tbl = table.split(".", 1)
        topic = self._topic(table)
        progress = SnapshotProgress(
            self.name, table, snapshot.estimated_rows(my, db, tbl), rows_before
        )
        stored = last  # JSON-safe, as kept in PostgreSQL
        while True:
            rows = snapshot.read_chunk(my, db, tbl, pk, last, self.snapshot_chunk)
            now_ms = int(time.time() * 1000)
            info = SourceInfo(self.name, db, tbl, view.file, view.pos, now_ms, "true")
            records = [change_record("r", pk, None, row, info, str(view), now_ms) for row in rows]
            finished = len(rows) < self.snapshot_chunk
            if rows:
                stored = [json_safe(rows[-1][c]) for c in pk]
                last = [rows[-1][c] for c in pk]  # next chunk compares driver values
            with pg.transaction():
                if records:
                    self._append(topic, records, pg)
                state.save_progress(pg, self.name, table, stored, len(rows), finished)
            progress.advance(len(rows))
            if finished:
                progress.finish()
                return

    # -- streaming ----------------------------------------------------------------------

    def _append(self, topic: str, records: Sequence[Record], pg: Conn) -> None:
        if self._atomic:
            self.log.append(topic, records, conn=pg)
        else:
            self.log.append(topic, records)

    def _flush(self, batch: list[Committed]) -> None:
        """Append the transactions of ``batch`` and store the position after the last."""
        if not batch:
            return
        pg = self._state()
        by_topic: dict[str, list[Record]] = defaultdict(list)
        for txn in batch:
            for topic, record in txn.records:
                by_topic[topic].append(record)
        end = batch[-1].position
        gtid = next((t.gtid for t in reversed(batch) if t.gtid), None)
        with pg.transaction():
            for topic, records in by_topic.items():
                self._append(topic, records, pg)
            state.save_position(pg, self.name, end, gtid)
        self.position = end
        self.gtid = gtid or self.gtid

    def run(
        self,
        stop: threading.Event | None = None,
        until: BinlogPosition | None = None,
    ) -> None:
        """Stream until ``stop`` is set, or until the stored position reaches ``until``.

        Raises:
            SourceError: a change cannot be decoded into a keyed event.
        """
        if self.position is None:
            self.start()
        assert self.position is not None
        if until is not None and until <= self.position:
            return
        reader = BinlogReader(
            self.name,
            self.settings,
            self.server_id,
            self.position,
            self.tables,
            self.topic_prefix,
            self.heartbeat_s,
            self.partitions,
        )
        self._reader = reader
        try:
            self._loop(reader, stop, until)
        finally:
            reader.close()
            self._reader = None

    def _loop(
        self,
        items: Iterable[Committed | Idle],
        stop: threading.Event | None,
        until: BinlogPosition | None,
    ) -> None:
        batch: list[Committed] = []
        events = 0
        first_at = 0.0
        for item in items:
            if isinstance(item, Committed):
                if not batch:
                    first_at = time.monotonic()
                batch.append(item)
                events += len(item.records)
                if item.ddl is not None:
                    log.info("mysql source %s: DDL at %s", self.name, item.position)
                due = (
                    events >= self.flush_events
                    or (time.monotonic() - first_at) * 1000 >= self.flush_ms
                    or (until is not None and until <= item.position)
                )
                if not due:
                    continue
                self._flush(batch)
                batch, events = [], 0
            else:
                self._flush(batch)
                batch, events = [], 0
                if (
                    item.position is not None
                    and self.position is not None
                    and (self.position < item.position)
                ):
                    with self._state().transaction():
                        state.save_position(self._state(), self.name, item.position, None)
                    self.position = item.position
            if stop is not None and stop.is_set():
                break
            if until is not None and self.position is not None and until <= self.position:
                break
        self._flush(batch)

    def catch_up(self, timeout_s: float = 30.0) -> BinlogPosition:
        """Stream until everything the server has logged so far is in the log.

        Raises:
            SourceError: not caught up within ``timeout_s``.
        """
        my = self._mysql()
        try:
            target = checks.current_position(my)
        finally:
            my.close()
        stop = threading.Event()
        timer = threading.Timer(timeout_s, stop.set)
        timer.start()
        try:
            self.run(stop=stop, until=target)
        finally:
            timer.cancel()
        assert self.position is not None
        if self.position < target:
            raise SourceError(
                f"mysql source {self.name}: not caught up with {target} after {timeout_s}s "
                f"(at {self.position})"
            )
        return self.position

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._pg is not None:
            self._pg.close()
            self._pg = None
