"""Reading the ROW binlog into whole transactions of change records.

:class:`BinlogReader` yields a :class:`Committed` for every transaction boundary
(``XID``, ``COMMIT``, or a DDL statement) with the change records of the captured
tables in binlog order and the position right after the boundary, and an
:class:`Idle` when the server sent a heartbeat (nothing more to read for now).
Column names come from the binlog's own table metadata (``binlog_row_metadata=FULL``),
so rows written after an ``ALTER TABLE`` decode with the columns they were written with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from headwater.errors import SourceError
from headwater.log.base import Record

from .envelope import Op, SourceInfo, change_record, topic_name, truncate_records
from .position import BinlogPosition
from .settings import MySQLSettings

log = logging.getLogger(__name__)

_IN_TXN_STATEMENTS = ("SAVEPOINT", "ROLLBACK TO", "RELEASE SAVEPOINT")
_TRUNCATE = re.compile(
    r"^TRUNCATE\s+(?:TABLE\s+)?(?:`?([^`\s.]+)`?\.)?`?([^`\s.;]+)`?\s*;?\s*$", re.IGNORECASE
)


def _truncated_table(query: str, default_db: str) -> tuple[str, str] | None:
    """``(db, table)`` if ``query`` is a TRUNCATE statement (else None)."""
    m = _TRUNCATE.match(query)
    if m is None:
        return None
    return (m.group(1) or default_db, m.group(2))


def schema_version(db: str, table: str, columns: list[tuple[str, int]]) -> str:
    """A fingerprint of a table's columns (name, binlog type code) as the binlog has
    them; any DDL that renames, adds, drops or retypes a column changes it."""
    raw = json.dumps([db, table, columns], separators=(",", ":")).encode()
    return hashlib.sha1(raw).hexdigest()[:12]


@dataclass
class Committed:
    """A transaction (or DDL statement) read to its end."""

    records: list[tuple[str, Record]]
    position: BinlogPosition
    gtid: str | None
    ddl: str | None = None


@dataclass
class Idle:
    """The server has nothing more right now; ``position`` is safe to resume from."""

    position: BinlogPosition | None


@dataclass
class _Txn:
    start: BinlogPosition
    gtid: str | None
    records: list[tuple[str, Record]] = field(default_factory=list)


class BinlogReader:
    """Streams the binlog from ``start`` and groups it into transactions.

    Only rows of ``tables`` (``db.table``) become records. ``heartbeat_s`` is how often an
    idle server says it is alive (and how soon :class:`Idle` arrives when nothing happens).
    """

    def __init__(
        self,
        name: str,
        settings: MySQLSettings,
        server_id: int,
        start: BinlogPosition,
        tables: list[str],
        topic_prefix: str,
        heartbeat_s: float = 0.5,
        partitions: int = 3,
    ) -> None:
        from pymysqlreplication import BinLogStreamReader  # type: ignore[import-untyped]
        from pymysqlreplication.event import (  # type: ignore[import-untyped]
            GtidEvent as MySQLGtidEvent,
        )
        from pymysqlreplication.event import (
            HeartbeatLogEvent,
            MariadbGtidEvent,
            QueryEvent,
            RotateEvent,
            XidEvent,
        )
        from pymysqlreplication.row_event import (  # type: ignore[import-untyped]
            DeleteRowsEvent,
            UpdateRowsEvent,
            WriteRowsEvent,
        )

        self.name = name
        self.topic_prefix = topic_prefix
        self.partitions = partitions
        self._versions: dict[int, str] = {}  # binlog table id -> schema version
        self.position = start
        self._tables = {tuple(t.split(".", 1)) for t in tables}
        self._txn: _Txn | None = None
        self._classes = {
            "write": WriteRowsEvent,
            "update": UpdateRowsEvent,
            "delete": DeleteRowsEvent,
            "xid": XidEvent,
            "query": QueryEvent,
            "heartbeat": HeartbeatLogEvent,
            "gtid": (MariadbGtidEvent, MySQLGtidEvent),
        }
        conn = settings.pymysql_kwargs()
        conn["read_timeout"] = max(30.0, heartbeat_s * 10)
        self._stream = BinLogStreamReader(
            connection_settings=conn,
            server_id=server_id,
            resume_stream=True,
            log_file=start.file,
            log_pos=start.pos,
            blocking=True,
            slave_heartbeat=heartbeat_s,
            only_events=[
                WriteRowsEvent,
                UpdateRowsEvent,
                DeleteRowsEvent,
                XidEvent,
                QueryEvent,
                RotateEvent,
                HeartbeatLogEvent,
                MariadbGtidEvent,
                MySQLGtidEvent,
            ],
            only_schemas=sorted({db for db, _ in self._tables}),
            only_tables=sorted({t for _, t in self._tables}),
            enable_logging=False,
        )

    def __iter__(self) -> Iterator[Committed | Idle]:
        c = self._classes
        rows_classes = (c["write"], c["update"], c["delete"])
        for event in self._stream:
            if isinstance(event, rows_classes):
                self._rows(event)
            elif isinstance(event, c["xid"]):
                yield self._commit()
            elif isinstance(event, c["gtid"]):
                self._txn = _Txn(self.position, str(event.gtid))
            elif isinstance(event, c["query"]):
                done = self._query(event)
                if done is not None:
                    yield done
            elif isinstance(event, c["heartbeat"]):
                yield Idle(self._idle_position())

    def _idle_position(self) -> BinlogPosition | None:
        """On a heartbeat outside a transaction, everything up to the server's current
        position has been read: events in between (checkpoints, other tables' rows
        filtered out) need nothing from us, so resuming there loses nothing."""
        if self._txn is not None:
            return None
        here = self._here()
        if self.position <= here:
            self.position = here
        return self.position

    def _here(self) -> BinlogPosition:
        return BinlogPosition(str(self._stream.log_file), int(self._stream.log_pos))

    def _commit(self, ddl: str | None = None) -> Committed:
        txn = self._txn
        self._txn = None
        self.position = self._here()
        if txn is None:
            return Committed([], self.position, None, ddl)
        # The header names the position after this transaction: a consumer that has
        # applied the record has applied the source up to there.
        end = {"position": str(self.position)}
        records = [(t, replace(r, headers={**r.headers, **end})) for t, r in txn.records]
        return Committed(records, self.position, txn.gtid, ddl)

    def _query(self, event: Any) -> Committed | None:
        query = str(event.query).strip()
        head = query[:20].upper()
        if head.startswith("BEGIN") or head.startswith("XA START"):
            if self._txn is None:
                self._txn = _Txn(self.position, None)
            return None
        if head.startswith(("COMMIT", "ROLLBACK")) and not head.startswith("ROLLBACK TO"):
            return self._commit()
        if head.startswith(_IN_TXN_STATEMENTS):
            return None
        # DDL (and other statements logged as text): each is its own boundary.
        schema = event.schema.decode() if isinstance(event.schema, bytes) else str(event.schema)
        log.info("mysql source %s: statement in %s: %s", self.name, schema, query[:200])
        done = self._commit(ddl=query)
        truncated = _truncated_table(query, schema)
        if truncated in self._tables:
            # Its rows' position is the statement's end: consumers that applied it
            # have applied everything before it.
            info = SourceInfo(
                self.name,
                truncated[0],
                truncated[1],
                done.position.file,
                done.position.pos,
                int(event.timestamp) * 1000,
            )
            topic = topic_name(self.topic_prefix, *truncated)
            now_ms = int(time.time() * 1000)
            done.records = [
                (topic, r)
                for r in truncate_records(info, self.partitions, str(done.position), now_ms)
            ]
        return done

    def _rows(self, event: Any) -> None:
        key = (str(event.schema), str(event.table))
        if key not in self._tables:
            return
        if self._txn is None:  # rows without a GTID/BEGIN (should not happen): own txn
            self._txn = _Txn(self.position, None)
        pk_raw = event.primary_key
        pk = [pk_raw] if isinstance(pk_raw, str) else list(pk_raw or ())
        if not pk or pk == [""]:
            raise SourceError(
                f"mysql source {self.name}: rows of {key[0]}.{key[1]} at {self._here()} carry "
                f"no primary key in the binlog metadata; give the table a primary key and "
                f"make sure binlog_row_metadata=FULL"
            )
        c = self._classes
        op: Op = (
            "c"
            if isinstance(event, c["write"])
            else ("u" if isinstance(event, c["update"]) else "d")
        )
        topic = topic_name(self.topic_prefix, key[0], key[1])
        version = self._versions.get(event.table_id)
        if version is None:
            cols = [(str(c.name), int(c.type)) for c in event.columns]
            version = self._versions[event.table_id] = schema_version(*key, cols)
        ts_ms = int(event.timestamp) * 1000
        now_ms = int(time.time() * 1000)
        txn = self._txn
        for row in event.rows:
            if op == "u":
                before, after = row["before_values"], row["after_values"]
                if any(before[k] != after[k] for k in pk):
                    # The key changed: like Debezium, a delete of the old key and a
                    # create of the new one, so keyed consumers drop the old row.
                    self._add(txn, topic, "d", pk, before, None, key, version, ts_ms, now_ms)
                    self._add(txn, topic, "c", pk, None, after, key, version, ts_ms, now_ms)
                    continue
            elif op == "c":
                before, after = None, row["values"]
            else:
                before, after = row["values"], None
            self._add(txn, topic, op, pk, before, after, key, version, ts_ms, now_ms)

    def _add(
        self,
        txn: _Txn,
        topic: str,
        op: Op,
        pk: list[str],
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        table: tuple[str, str],
        version: str,
        ts_ms: int,
        now_ms: int,
    ) -> None:
        info = SourceInfo(
            self.name,
            table[0],
            table[1],
            txn.start.file,
            txn.start.pos,
            ts_ms,
            "false",
            txn.gtid,
            len(txn.records),
            version,
        )
        txn.records.append(
            (topic, change_record(op, pk, before, after, info, str(txn.start), now_ms))
        )

    def close(self) -> None:
        self._stream.close()
