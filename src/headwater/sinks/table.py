"""Copy a topic into a PostgreSQL table, exactly once.

Values must be JSON and keys UTF-8. PostgreSQL validates both while copying (``jsonb``
input is parsed in C); a batch holding a bad record fails, the worker bisects it and
the record that fails alone goes to the dead-letter topic with PostgreSQL's error.

- ``append``: one row per record ``(topic, partition, offset, key, value, ts)``,
  written with COPY. Exactly-once: with the offsets committed in the same transaction,
  a replay after a crash never writes a row twice.
- ``upsert``: one row per key holding the latest value; a tombstone deletes the key.
  Within a batch only the last operation per key is applied (keys never span
  partitions, so their order is the offset order).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Literal

from psycopg import sql

from headwater.engine.processor import Processor
from headwater.errors import ProcessingError
from headwater.log.base import Conn, LogRecord
from headwater.log.copy_binary import LEN, NULL, SIGNATURE, TRAILER


class TableSink(Processor):
    delivery = "exactly-once"

    def __init__(self, table: str, mode: Literal["append", "upsert"] = "append") -> None:
        self.table = sql.Identifier(*table.split("."))
        self.schema = table.split(".")[0] if "." in table else None
        self.mode = mode
        # Rendered once: composing SQL costs about as much as a small batch's COPY.
        self._copy = (
            sql.SQL(
                'COPY {} (topic, partition, "offset", key, value, ts) FROM STDIN (FORMAT BINARY)'
            )
            .format(self.table)
            .as_string()
        )
        self._delete = sql.SQL("DELETE FROM {} WHERE key = ANY(%s)").format(self.table).as_string()
        self._upsert_stmt = (
            sql.SQL(
                'INSERT INTO {} (key, value, topic, partition, "offset", ts)'
                " VALUES (%s, %s::jsonb, %s, %s, %s, to_timestamp(%s)) ON CONFLICT (key)"
                " DO UPDATE SET value = excluded.value, topic = excluded.topic,"
                ' partition = excluded.partition, "offset" = excluded."offset",'
                " ts = excluded.ts"
            )
            .format(self.table)
            .as_string()
        )

    def setup(self, conn: Conn) -> None:
        if self.schema:
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
        if self.mode == "append":
            ddl = (
                "CREATE TABLE IF NOT EXISTS {} (topic text NOT NULL, partition int4 NOT NULL,"
                ' "offset" int8 NOT NULL, key text, value jsonb, ts timestamptz NOT NULL)'
            )
        else:
            ddl = (
                "CREATE TABLE IF NOT EXISTS {} (key text PRIMARY KEY, value jsonb NOT NULL,"
                ' topic text NOT NULL, partition int4 NOT NULL, "offset" int8 NOT NULL,'
                " ts timestamptz NOT NULL)"
            )
        conn.execute(sql.SQL(ddl).format(self.table))

    def process(self, conn: Conn, records: Sequence[LogRecord]) -> None:
        if self.mode == "append":
            self._append(conn, records)
        else:
            self._upsert(conn, records)

    def _append(self, conn: Conn, records: Sequence[LogRecord]) -> None:
        with conn.cursor().copy(self._copy) as cp:
            cp.write(_encode_append_rows(records))

    def _upsert(self, conn: Conn, records: Sequence[LogRecord]) -> None:
        last: dict[str, LogRecord] = {}
        for r in records:
            k = _key(r)
            if k is None:
                raise ProcessingError("upsert mode needs a key")
            last[k] = r
        deletes = [k for k, r in last.items() if r.value is None]
        upserts = [(k, r) for k, r in last.items() if r.value is not None]
        if deletes:
            conn.execute(self._delete, (deletes,))
        if upserts:
            with conn.cursor() as cur:
                cur.executemany(
                    self._upsert_stmt,
                    [
                        (k, _value(r), r.topic, r.partition, r.offset, r.timestamp_ms / 1000)
                        for k, r in upserts
                    ],
                )


def _key(r: LogRecord) -> str | None:
    if r.key is None:
        return None
    try:
        return r.key.decode()
    except UnicodeDecodeError:
        raise ProcessingError("key is not UTF-8") from None


def _value(r: LogRecord) -> str | None:
    """The value as JSON text, validated (COPY and casts take the text as it is)."""
    if r.value is None:
        return None
    try:
        text = r.value.decode()
        json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProcessingError(f"value is not JSON: {exc}") from None
    if "\x00" in text:
        raise ProcessingError("value contains a NUL character, which jsonb cannot store")
    return text


_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
_HEAD = struct.Struct("!hi")  # field count, topic length
_MID = struct.Struct("!iiiq")  # partition (len, value), offset (len, value)
_TS = struct.Struct("!iq")


def _encode_append_rows(records: Sequence[LogRecord]) -> bytes:
    """Binary COPY rows (topic text, partition int4, offset int8, key text,
    value jsonb, ts timestamptz), built without per-row driver calls."""
    out = [SIGNATURE]
    append = out.append
    topics: dict[str, bytes] = {}
    for r in records:
        topic = topics.get(r.topic)
        if topic is None:
            topic = topics[r.topic] = r.topic.encode()
        append(_HEAD.pack(6, len(topic)))
        append(topic)
        append(_MID.pack(4, r.partition, 8, r.offset))
        if r.key is None:
            append(NULL)
        else:
            append(LEN.pack(len(r.key)))
            append(r.key)
        if r.value is None:
            append(NULL)
        else:
            append(LEN.pack(len(r.value) + 1))
            append(b"\x01")  # jsonb binary format version
            append(r.value)
        append(_TS.pack(8, r.timestamp_ms * 1000 - _PG_EPOCH_US))
    append(TRAILER)
    return b"".join(out)
