"""Merge a captured table's CDC topic, in order, into a replica table, exactly once.

Records are Debezium change events (DESIGN.md, "Change events") as the PostgreSQL and
MySQL/MariaDB sources write them: value = the envelope JSON, key = the primary-key
columns as JSON. A tombstone (value None) is ignored. Per op:

- ``r`` / ``c`` / ``u``: upsert the ``after`` row by primary key;
- ``d``: delete by key (the record key, else the key columns of ``before``);
- ``t`` (truncate, written by the PostgreSQL source to *every* partition): deletes the
  rows last written from this record's partition (all of them precede it in that
  partition's order) and, from other partitions, the rows whose applied position is
  older than the truncate's. Rows of a partition that lags behind are removed at the
  latest when that partition's own copy of the truncate arrives, and rows written
  after the truncate (a newer position, or a later offset in their own partition)
  survive. Re-applying a truncate is harmless.

The replica table ``<schema>.<table>`` is created on first use with the source's
columns, the primary key taken from the record key's columns, and bookkeeping columns:

- ``_hw_position text``: the source position applied last to the row (the record's
  ``position`` header, or the envelope's ``lsn`` / ``file:pos``);
- ``_hw_position_key numeric``: the same, sortable across sources (:func:`position_key`);
- ``_hw_partition int``: the input partition the row's last change came from;
- ``_hw_op char(1)``: the row's last op (``r``, ``c`` or ``u``);
- ``_hw_updated_at timestamptz``: when it was applied (transaction time).

Column types: the envelopes carry values only (PostgreSQL's ``schema_version`` is a
fingerprint, not a type list), so types are inferred from JSON values — int → bigint
(numeric beyond 64 bits), float → double precision, bool → boolean, str → text,
object/array → jsonb; a column seen only as null is created as text. Values the
sources send as strings (numeric, dates, timestamps, uuid, bytea as base64) stay text.

Schema evolution, applied in the batch's transaction:

- a column new in ``after`` → ``ALTER TABLE ... ADD COLUMN`` (earlier rows: NULL);
- a value that does not fit its column (a type change at the source) widens it:
  bigint → double precision → numeric for numbers, jsonb for objects/arrays, text
  otherwise (``ALTER COLUMN ... TYPE ... USING``); text and jsonb hold any value;
- a column absent from ``after`` (dropped or renamed at the source) is kept and set to
  NULL in every newer version of a row; a rename therefore shows as a new column, the
  old one keeping only the values of rows not changed since;
- columns named in the PostgreSQL event's ``unchanged_toast`` keep their current value.

Batches: per key only the net change is applied (keys never span partitions, so their
order is the offset order), with set-based statements over a JSON array
(``json_populate_recordset``: the text parser, about 1 µs a row cheaper than going
through ``jsonb``): one ``INSERT ... ON CONFLICT DO UPDATE`` and one
``DELETE ... USING`` per run of records between truncates.

Delivery: exactly-once — every write is on the worker's connection, in the batch's
transaction with the offsets; ``process`` keeps no state between calls (the table's
shape is read from the catalog each batch), so a re-run after a rollback or during a
bisection gives the same result. A record that is not a change event (not JSON, no or
unknown op, no row, no key) raises :class:`ProcessingError` and is dead-lettered.

Limits:

- the primary key is fixed when the table is created (a change of the source's key
  definition is not followed); column names must fit PostgreSQL's 63 bytes and not
  start with ``_hw_``;
- a primary-key change that leaves a TOASTed value unchanged (PostgreSQL, REPLICA
  IDENTITY DEFAULT) arrives as ``c`` under the new key without that value, and the
  old row's ``d`` may be applied first (another partition): the column is NULL in the
  replica until the row's next change sets it;
- the truncate rule relies on ``_hw_partition``: changing the topic's partition
  count needs the replica rebuilt (re-snapshot);
- rows changed at the source by DDL alone (``ALTER ... TYPE ... USING``, a new column's
  DEFAULT) are not in the log: they change in the replica with their next event.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from headwater.engine.processor import Processor
from headwater.errors import ProcessingError
from headwater.jsoncodec import JSONDecodeError, dumps, dumps_str, loads
from headwater.log.base import Conn, LogRecord

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_BINLOG_INDEX = re.compile(r"(\d+)$")

META = ("_hw_position", "_hw_position_key", "_hw_partition", "_hw_op", "_hw_updated_at")
_META_DDL = (
    "_hw_position text, _hw_position_key numeric, _hw_partition int,"
    " _hw_op char(1), _hw_updated_at timestamptz"
)
_INT64 = 2**63


def position_key(position: str | int | None) -> int | None:
    """A source position as a number that sorts in source order (None stays None).

    - PostgreSQL LSN ``"X/Y"`` (hex halves) → the 64-bit LSN ``X << 32 | Y``; an int
      (the envelope's ``lsn``) is taken as it is.
    - MySQL/MariaDB ``"file:pos"`` (``mysql-bin.000012:4711``) → ``index << 64 | pos``,
      ``index`` being the file name's numeric suffix (files roll over in index order).

    Numbers compare only within one source (a replica table has one).

    Raises:
        ValueError: ``position`` has neither form.
    """
    if position is None or position == "":
        return None
    if isinstance(position, int):
        return position
    if ":" in position:
        file, _, pos = position.rpartition(":")
        m = _BINLOG_INDEX.search(file)
        return ((int(m.group(1)) if m else 0) << 64) | int(pos)
    if "/" in position:
        hi, _, lo = position.partition("/")
        return (int(hi, 16) << 32) | int(lo, 16)
    return int(position)


# -- column types ------------------------------------------------------------------------


def json_type(v: Any) -> str | None:
    """The column type a JSON value asks for (None for null)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "bigint" if -_INT64 <= v < _INT64 else "numeric"
    if isinstance(v, float):
        return "double precision"
    if isinstance(v, str):
        return "text"
    return "jsonb"


_NUMERIC_RANK = {"bigint": 0, "double precision": 1, "numeric": 2}


def widen(column: str, value: str) -> str | None:
    """The type ``column`` must become to hold a value of type ``value``; None: it fits.

    Types not made here (a table prepared by hand) are trusted to fit."""
    if column == value or column in ("text", "jsonb"):
        return None
    if column not in _NUMERIC_RANK and column != "boolean":
        return None
    if column in _NUMERIC_RANK and value in _NUMERIC_RANK:
        return None if _NUMERIC_RANK[value] <= _NUMERIC_RANK[column] else value
    return "jsonb" if value == "jsonb" else "text"


# -- parsed changes ----------------------------------------------------------------------


@dataclass(slots=True)
class _Change:
    op: str  # r/c/u (upsert) or d
    row: dict[str, Any] | None  # after (upserts)
    key: dict[str, Any] | None  # key columns (deletes)
    missing: frozenset[str]  # unchanged TOAST columns not in row
    position: str | None
    position_key: int | None
    partition: int


@dataclass(slots=True)
class _Truncate:
    position_key: int | None
    partition: int


@dataclass
class _Shape:
    """The replica table as the catalog has it (empty ``columns``: not created)."""

    columns: dict[str, str] = field(default_factory=dict)  # name -> type, in order
    key: list[str] = field(default_factory=list)


_NO_COLUMNS: frozenset[str] = frozenset()


def _parse(r: LogRecord, positions: dict[Any, int | None]) -> _Change | _Truncate | None:
    """One record as a change; ``positions`` caches :func:`position_key` (the rows of
    one transaction share their position)."""
    if r.value is None:
        return None
    try:
        ev = loads(r.value)
    except JSONDecodeError as exc:
        raise ProcessingError(f"value is not JSON: {exc}") from None
    if not isinstance(ev, dict):
        raise ProcessingError("value is not a change event (not a JSON object)")
    op = ev.get("op")
    source = ev.get("source") if isinstance(ev.get("source"), dict) else {}
    raw_pos: str | int | None = r.headers.get("position")
    if raw_pos is None and source:
        if "lsn" in source:
            raw_pos = source["lsn"]
        elif "file" in source and "pos" in source:
            raw_pos = f"{source['file']}:{source['pos']}"
    try:
        pkey = positions[raw_pos]
    except KeyError:
        try:
            pkey = positions[raw_pos] = position_key(raw_pos)
        except (ValueError, TypeError):
            raise ProcessingError(f"position {raw_pos!r} is neither an LSN nor file:pos") from None
    pos = None if raw_pos is None else str(raw_pos)
    if op == "t":
        return _Truncate(pkey, r.partition)
    if op in ("r", "c", "u"):
        after = ev.get("after")
        if not isinstance(after, dict):
            raise ProcessingError(f"op {op!r} without an 'after' row")
        toast = ev.get("unchanged_toast")
        if not toast:
            missing = _NO_COLUMNS
        elif not isinstance(toast, list) or not all(isinstance(c, str) for c in toast):
            raise ProcessingError("'unchanged_toast' is not a list of column names")
        else:
            missing = frozenset(c for c in toast if c not in after)
        return _Change(op, after, None, missing, pos, pkey, r.partition)
    if op == "d":
        key: Any = None
        if r.key is not None:
            try:
                key = loads(r.key)
            except JSONDecodeError:
                raise ProcessingError("key is not JSON") from None
        if key is None:
            key = ev.get("before")
        if not isinstance(key, dict) or not key:
            raise ProcessingError("delete without a key or 'before' row")
        return _Change("d", None, key, frozenset(), pos, pkey, r.partition)
    raise ProcessingError(f"unknown op {op!r} (expected r, c, u, d or t)")


def _identity(r: LogRecord, ch: _Change, key_columns: Sequence[str]) -> bytes:
    """What changes of one row share: the record key (its bytes), else the key
    columns rendered as the sources render keys."""
    if r.key is not None:
        return r.key
    row = ch.row if ch.row is not None else ch.key
    assert row is not None
    return dumps({c: row.get(c) for c in key_columns})


def _collapse(into: dict[bytes, _Change], ident: bytes, ch: _Change) -> None:
    """Keep the net change per row; an upsert leaving TOAST columns out takes them
    from the row version the same batch wrote before it."""
    prev = into.pop(ident, None)  # re-insert: dict order = order of last change
    if ch.missing and prev is not None and prev.row is not None:
        assert ch.row is not None
        ch.row = dict(ch.row)
        for c in ch.missing:
            if c in prev.row:
                ch.row[c] = prev.row[c]
        ch.missing = frozenset(c for c in ch.missing if c in prev.missing)
    into[ident] = ch


# -- the processor -----------------------------------------------------------------------


class ReplicaSink(Processor):
    """Merges CDC events into the replica table ``schema.table`` (see the module doc)."""

    delivery = "exactly-once"

    def __init__(self, schema: str, table: str) -> None:
        for what, name in (("schema", schema), ("table", table)):
            if not _IDENT.match(name):
                raise ValueError(f"replica {what} {name!r} is not a plain identifier")
        self.schema = schema
        self.table = table
        self._ident = sql.Identifier(schema, table)
        self._qualified = f"{schema}.{table}"

    def setup(self, conn: Conn) -> None:
        self._lock(conn)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))

    def process(self, conn: Conn, records: Sequence[LogRecord]) -> None:
        shape = self._shape(conn)
        pending: dict[bytes, _Change] = {}
        positions: dict[Any, int | None] = {}
        parsed = [(r, _parse(r, positions)) for r in records]
        key_columns = shape.key or _first_key(parsed)
        for r, ch in parsed:
            if ch is None:
                continue
            if isinstance(ch, _Truncate):
                shape = self._flush(conn, shape, pending, key_columns)
                pending = {}
                self._truncate(conn, shape, ch)
                continue
            _collapse(pending, _identity(r, ch, key_columns), ch)
        self._flush(conn, shape, pending, key_columns)

    # -- catalog and DDL ---------------------------------------------------------------

    def _lock(self, conn: Conn) -> None:
        """Serialize DDL on this table across worker processes (transaction-scoped)."""
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", (self._qualified,))

    def _shape(self, conn: Conn) -> _Shape:
        rows = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod),"
            " coalesce(a.attnum = ANY(i.indkey), false)"
            " FROM pg_attribute a LEFT JOIN pg_index i"
            " ON i.indrelid = a.attrelid AND i.indisprimary"
            " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"
            " ORDER BY a.attnum",
            (self._ident.as_string(conn),),
        ).fetchall()
        shape = _Shape()
        for name, typ, is_key in rows:
            shape.columns[name] = typ
            if is_key:
                shape.key.append(name)
        return shape

    def _evolve(
        self, conn: Conn, shape: _Shape, rows: Iterable[dict[str, Any]], key_columns: list[str]
    ) -> _Shape:
        """Create the table, add columns and widen types so that ``rows`` fit."""
        needed = _needed_types(rows)
        if shape.columns and not _ddl_for(self._ident, shape, needed):
            return shape
        self._lock(conn)
        shape = self._shape(conn)  # another worker may have changed it meanwhile
        if not shape.columns:
            if not key_columns:
                raise ProcessingError("cannot create a replica table without a primary key")
            cols = [
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(needed.get(c) or "text"))
                for c in _ordered(key_columns, needed)
            ]
            conn.execute(
                sql.SQL("CREATE TABLE {} ({}, {}, PRIMARY KEY ({}))").format(
                    self._ident,
                    sql.SQL(", ").join(cols),
                    sql.SQL(_META_DDL),
                    sql.SQL(", ").join(map(sql.Identifier, key_columns)),
                )
            )
        else:
            for stmt in _ddl_for(self._ident, shape, needed):
                conn.execute(stmt)
        return self._shape(conn)

    # -- writes ------------------------------------------------------------------------

    def _flush(
        self, conn: Conn, shape: _Shape, pending: dict[bytes, _Change], key_columns: list[str]
    ) -> _Shape:
        if not pending:
            return shape
        upserts = [c for c in pending.values() if c.row is not None]
        deletes = [c.key for c in pending.values() if c.key is not None]
        rows: list[dict[str, Any]] = []
        for c in upserts:
            assert c.row is not None
            for k in key_columns:
                if c.row.get(k) is None:
                    raise ProcessingError(f"'after' has no value for key column {k!r}")
            rows.append(c.row)
        if rows:
            shape = self._evolve(conn, shape, rows, key_columns)
        elif not shape.columns:
            return shape  # deletes only, and nothing replicated yet
        if deletes:
            keys = list(_keys(deletes, shape.key))
            if any(
                json_type(v) and widen(shape.columns[k], json_type(v) or "")
                for d in keys
                for k, v in d.items()
            ):
                shape = self._evolve(conn, shape, keys, key_columns)
            conn.execute(
                sql.SQL(
                    "DELETE FROM {t} AS t USING json_populate_recordset(NULL::{t}, %s::json)"
                    " AS k WHERE {cond}"
                ).format(
                    t=self._ident,
                    cond=sql.SQL(" AND ").join(
                        sql.SQL("t.{c} = k.{c}").format(c=sql.Identifier(c)) for c in shape.key
                    ),
                ),
                (dumps_str(keys),),
            )
        groups: dict[frozenset[str], list[dict[str, Any]]] = {}
        for c in upserts:
            row = c.row  # this call's own dict (parsed or copied in this batch)
            assert row is not None
            row["_hw_position"] = c.position
            row["_hw_position_key"] = c.position_key
            row["_hw_partition"] = c.partition
            row["_hw_op"] = c.op
            groups.setdefault(c.missing, []).append(row)
        for missing, group in groups.items():
            self._upsert(conn, shape, group, missing)
        return shape

    def _upsert(
        self, conn: Conn, shape: _Shape, rows: list[dict[str, Any]], keep: frozenset[str]
    ) -> None:
        cols = [c for c in shape.columns if c != "_hw_updated_at" and c not in keep]
        ids = [sql.Identifier(c) for c in cols]
        updates: list[sql.Composable] = [
            sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c))
            for c in cols
            if c not in shape.key
        ]
        updates.append(sql.SQL("_hw_updated_at = excluded._hw_updated_at"))
        conn.execute(
            sql.SQL(
                "INSERT INTO {t} ({cols}, _hw_updated_at)"
                " SELECT {cols}, now() FROM json_populate_recordset(NULL::{t}, %s::json)"
                " ON CONFLICT ({key}) DO UPDATE SET {updates}"
            ).format(
                t=self._ident,
                cols=sql.SQL(", ").join(ids),
                key=sql.SQL(", ").join(map(sql.Identifier, shape.key)),
                updates=sql.SQL(", ").join(updates),
            ),
            (dumps_str(rows),),
        )

    def _truncate(self, conn: Conn, shape: _Shape, t: _Truncate) -> None:
        if not shape.columns:
            return
        conn.execute(
            sql.SQL(
                "DELETE FROM {} WHERE _hw_partition = %s OR _hw_position_key < %s::numeric"
            ).format(self._ident),
            (t.partition, t.position_key),
        )


# -- helpers -----------------------------------------------------------------------------


def _first_key(parsed: Iterable[tuple[LogRecord, _Change | _Truncate | None]]) -> list[str]:
    """The key columns named by the first keyed change (the table does not exist yet)."""
    for r, ch in parsed:
        if not isinstance(ch, _Change):
            continue
        if ch.key is not None:
            return list(ch.key)
        if r.key is not None:
            try:
                key = loads(r.key)
            except JSONDecodeError:
                raise ProcessingError("key is not JSON") from None
            if isinstance(key, dict) and key:
                return list(key)
    return []


def _keys(
    deletes: Iterable[dict[str, Any]], key_columns: Sequence[str] | None = None
) -> Iterable[dict[str, Any]]:
    for d in deletes:
        if key_columns is None:
            yield d
            continue
        for k in key_columns:
            if d.get(k) is None:
                raise ProcessingError(f"delete key has no value for key column {k!r}")
        yield {k: d[k] for k in key_columns}


def _needed_types(rows: Iterable[dict[str, Any]]) -> dict[str, str | None]:
    """Per column (first-seen order), the widest type its non-null values need."""
    seen: dict[str, set[type]] = {}
    big: set[str] = set()  # columns with ints beyond 64 bits
    for row in rows:
        for name, v in row.items():
            ts = seen.get(name)
            if ts is None:
                ts = seen[name] = set()
            tv = type(v)
            ts.add(tv)
            if tv is int and not -_INT64 <= v < _INT64:
                big.add(name)
    out: dict[str, str | None] = {}
    for name, types in seen.items():
        cur: str | None = None
        for tv in types:
            t = _PY_TYPES.get(tv, "jsonb") if tv is not int or name not in big else "numeric"
            if t is None or t == cur:
                continue
            cur = t if cur is None else _join(cur, t)
        out[name] = cur
    return out


def _join(a: str, b: str) -> str:
    """The narrowest of our types holding values of types ``a`` and ``b`` (commutative,
    for a new column; an existing text or jsonb column holds anything)."""
    if a == b:
        return a
    if a in _NUMERIC_RANK and b in _NUMERIC_RANK:
        return a if _NUMERIC_RANK[a] > _NUMERIC_RANK[b] else b
    if "jsonb" in (a, b) and "text" not in (a, b):
        return "jsonb"
    return "text"


_PY_TYPES: dict[type, str | None] = {
    type(None): None,
    bool: "boolean",
    int: "bigint",
    float: "double precision",
    str: "text",
    dict: "jsonb",
    list: "jsonb",
}


def _ordered(key_columns: Sequence[str], needed: dict[str, str | None]) -> list[str]:
    return [*key_columns, *(c for c in needed if c not in key_columns)]


def _ddl_for(
    table: sql.Identifier, shape: _Shape, needed: dict[str, str | None]
) -> list[sql.Composed]:
    """The ALTER TABLE statements that make columns of ``needed`` types fit."""
    out: list[sql.Composed] = []
    for name, t in needed.items():
        col = sql.Identifier(name)
        have = shape.columns.get(name)
        if have is None:
            out.append(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(table, col, sql.SQL(t or "text"))
            )
            continue
        to = widen(have, t) if t is not None else None
        if to is None:
            continue
        using = "to_jsonb({})" if to == "jsonb" else "{}::" + to
        out.append(
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING " + using).format(
                table, col, sql.SQL(to), col
            )
        )
    return out
