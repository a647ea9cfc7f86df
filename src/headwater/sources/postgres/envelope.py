"""Debezium-compatible change events for PostgreSQL rows.

An event is ``{"op", "before", "after", "source", "ts_ms"}`` (DESIGN.md), with
``op`` one of ``r`` (snapshot read), ``c``, ``u``, ``d``, ``t`` (truncate); its
record key is the JSON of the primary-key columns (``{"id":1}``) in column order.

``source`` holds ``connector`` ("postgresql"), ``name`` (the Headwater source),
``db``, ``schema``, ``table``, ``lsn`` (int: the commit record's LSN for streamed
changes, the slot's consistent point for snapshot reads), ``txId``, ``ts_ms``
(commit time), ``snapshot`` (``"true"`` / ``"false"``) and ``schema_version`` (a
stable fingerprint of the column names and types the row was decoded with; it
changes exactly when a Relation message changes the table's shape).

Before images (what REPLICA IDENTITY allows):
- ``FULL``: the whole old row on updates and deletes;
- ``DEFAULT``/``INDEX``: deletes carry the key columns only (``before`` holds just
  those); updates carry ``before`` only when the key changed (key columns only),
  else ``before`` is null.

Unchanged TOASTed values (choice made here): when the server does not resend a large
value that an UPDATE left unchanged, the value is taken from the old row if
REPLICA IDENTITY FULL sent it; otherwise the column is **left out of ``after``** and
named in the event's extra field ``"unchanged_toast": [...]``. A consumer merging
into a replica keeps its existing column value for those columns. No value is ever
invented.

Values that fail to convert never stop capture: they are kept as their text form.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from headwater.jsoncodec import dumps
from headwater.sources.postgres.pgoutput import UNCHANGED, Relation, TupleValue
from headwater.sources.postgres.values import Converter, ValueDecoder


@dataclass(frozen=True, slots=True)
class TableShape:
    """One version of a captured table's columns, with converters resolved."""

    relid: int
    schema: str
    table: str
    names: tuple[str, ...]
    type_oids: tuple[int, ...]
    converters: tuple[Converter, ...]
    key_index: tuple[int, ...]
    """Positions of the primary-key columns in ``names`` (empty: no key)."""
    version: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


def shape_of(
    rel: Relation, decoder: ValueDecoder, key_columns: Sequence[str] | None = None
) -> TableShape:
    """The shape of a Relation message.

    ``key_columns`` names the primary key (from the catalog); without it the replica
    identity flags are used, except under REPLICA IDENTITY FULL where every column is
    flagged and the event key would be the whole row — then the key is empty.
    """
    names = tuple(c.name for c in rel.columns)
    oids = tuple(c.type_oid for c in rel.columns)
    if key_columns is not None:
        key = tuple(names.index(k) for k in key_columns if k in names)
    elif rel.replica_identity == "f":
        key = ()
    else:
        key = tuple(i for i, c in enumerate(rel.columns) if c.is_key)
    return make_shape(rel.relid, rel.namespace, rel.name, names, oids, key, decoder)


def make_shape(
    relid: int,
    schema: str,
    table: str,
    names: tuple[str, ...],
    oids: tuple[int, ...],
    key_index: tuple[int, ...],
    decoder: ValueDecoder,
) -> TableShape:
    """A :class:`TableShape` from parts (the snapshot builds it from the catalog)."""
    fp = hashlib.sha1(
        json.dumps([schema, table, list(zip(names, oids, strict=True))]).encode()
    ).hexdigest()[:12]
    return TableShape(
        relid,
        schema,
        table,
        names,
        oids,
        tuple(decoder.converter(o) for o in oids),
        key_index,
        fp,
    )


def convert_row(
    shape: TableShape, values: Sequence[TupleValue], fallback: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Convert one tuple to a dict; return it and the columns left out as UNCHANGED.

    An UNCHANGED column takes its value from ``fallback`` (the old row) when that has
    it, else it is left out and listed.
    """
    out: dict[str, Any] = {}
    missing: list[str] = []
    for name, conv, v in zip(shape.names, shape.converters, values, strict=False):
        if v is None:
            out[name] = None
        elif v is UNCHANGED:
            if fallback is not None and name in fallback:
                out[name] = fallback[name]
            else:
                missing.append(name)
        else:
            try:
                out[name] = conv(v)  # type: ignore[arg-type]
            except (ValueError, TypeError):
                out[name] = v.decode(errors="replace")  # type: ignore[union-attr]
    return out, missing


def key_only(shape: TableShape, values: Sequence[TupleValue]) -> dict[str, Any]:
    """The key columns of a ``K`` old tuple (the server sends the others as NULL)."""
    row, _ = convert_row(shape, values)
    if not shape.key_index:
        return {k: v for k, v in row.items() if v is not None}
    return {shape.names[i]: row.get(shape.names[i]) for i in shape.key_index}


def record_key(shape: TableShape, row: dict[str, Any] | None) -> bytes | None:
    """The record key: JSON of the key columns, None when the table has no key."""
    if row is None or not shape.key_index:
        return None
    names = shape.names
    return dumps({names[i]: row.get(names[i]) for i in shape.key_index})


def change_event(
    *,
    op: str,
    shape: TableShape,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    source_name: str,
    db: str,
    lsn: int,
    tx_id: int | None,
    commit_ts_ms: int,
    snapshot: bool,
    unchanged_toast: Sequence[str] = (),
) -> dict[str, Any]:
    """The Debezium envelope (see the module doc)."""
    event: dict[str, Any] = {
        "op": op,
        "before": before,
        "after": after,
        "source": source_block(
            shape,
            source_name=source_name,
            db=db,
            lsn=lsn,
            tx_id=tx_id,
            commit_ts_ms=commit_ts_ms,
            snapshot=snapshot,
        ),
        "ts_ms": int(time.time() * 1000),
    }
    if unchanged_toast:
        event["unchanged_toast"] = list(unchanged_toast)
    return event


def source_block(
    shape: TableShape,
    *,
    source_name: str,
    db: str,
    lsn: int,
    tx_id: int | None,
    commit_ts_ms: int,
    snapshot: bool,
) -> dict[str, Any]:
    """An event's ``source`` block."""
    return {
        "connector": "postgresql",
        "name": source_name,
        "db": db,
        "schema": shape.schema,
        "table": shape.table,
        "lsn": lsn,
        "txId": tx_id,
        "ts_ms": commit_ts_ms,
        "snapshot": "true" if snapshot else "false",
        "schema_version": shape.version,
    }


def source_fragment(
    shape: TableShape,
    *,
    source_name: str,
    db: str,
    lsn: int,
    tx_id: int | None,
    commit_ts_ms: int,
    snapshot: bool,
) -> bytes:
    """The JSON of an event's ``source`` block, rendered once per transaction and
    table for :func:`encode_change`."""
    return dumps(
        source_block(
            shape,
            source_name=source_name,
            db=db,
            lsn=lsn,
            tx_id=tx_id,
            commit_ts_ms=commit_ts_ms,
            snapshot=snapshot,
        )
    )


def encode_change(
    op: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    source: bytes,
    ts_ms: int,
    unchanged_toast: Sequence[str] = (),
) -> bytes:
    """The same bytes as ``encode(change_event(...))``, with a pre-rendered ``source``
    block (the hot path: one JSON encoding per row instead of the whole envelope)."""
    extra = b',"unchanged_toast":' + dumps(list(unchanged_toast)) if unchanged_toast else b""
    return b"".join(
        (
            b'{"op":"',
            op.encode(),
            b'","before":',
            b"null" if before is None else dumps(before),
            b',"after":',
            b"null" if after is None else dumps(after),
            b',"source":',
            source,
            b',"ts_ms":',
            str(ts_ms).encode(),
            extra,
            b"}",
        )
    )


def encode(event: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON of an event."""
    return dumps(event)


__all__ = [
    "TableShape",
    "change_event",
    "convert_row",
    "encode",
    "encode_change",
    "key_only",
    "make_shape",
    "record_key",
    "shape_of",
    "source_fragment",
]
