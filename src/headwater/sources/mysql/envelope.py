"""The Debezium-compatible change event and its record (see DESIGN.md, "Change events").

Value::

    {"op": "c|u|d|r", "before": {...}|null, "after": {...}|null,
     "source": {"connector": "mysql", "name", "db", "table", "file", "pos", "row",
                "gtid", "ts_ms", "snapshot", "schema_version"}, "ts_ms"}

``schema_version`` (streamed events) fingerprints the column names and binlog types the
row was written with; it changes with every DDL that changes them. A ``TRUNCATE`` of a
captured table is ``{"op": "t", "before": null, "after": null, ...}``, written once into
every partition of the table's topic (keys from :func:`key_per_partition`) so that each
consumer sees it in order with the rows before and after it.

Key: the primary-key columns as compact JSON (``{"id":1}``), so one row always lands
in one partition and its changes stay in commit order. Header ``position``: the
binlog position (``file:pos``) from which streaming resumes once this event's
transaction is in the log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from headwater.jsoncodec import dumps
from headwater.log.base import Record
from headwater.log.partitioner import key_per_partition

from .values import json_safe, row_json

Op = Literal["c", "u", "d", "r"]


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """Where an event came from; becomes the envelope's ``source`` block."""

    name: str
    db: str
    table: str
    file: str
    pos: int
    ts_ms: int
    snapshot: Literal["true", "last", "false"] = "false"
    gtid: str | None = None
    row: int = 0
    schema_version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": "headwater",
            "connector": "mysql",
            "name": self.name,
            "db": self.db,
            "table": self.table,
            "file": self.file,
            "pos": self.pos,
            "row": self.row,
            "ts_ms": self.ts_ms,
            "snapshot": self.snapshot,
        }
        if self.gtid is not None:
            out["gtid"] = self.gtid
        if self.schema_version is not None:
            out["schema_version"] = self.schema_version
        return out


def key_of(pk: Sequence[str], row: Mapping[str, Any]) -> bytes:
    """The record key: the primary-key columns of ``row`` as compact JSON.

    Raises:
        KeyError: a primary-key column is missing from the row.
    """
    return dumps({c: json_safe(row[c]) for c in pk})


def change_record(
    op: Op,
    pk: Sequence[str],
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    source: SourceInfo,
    position: str,
    now_ms: int,
) -> Record:
    """One change event as a log record (key from ``after``, or ``before`` on delete)."""
    value = {
        "op": op,
        "before": row_json(dict(before)) if before is not None else None,
        "after": row_json(dict(after)) if after is not None else None,
        "source": source.as_dict(),
        "ts_ms": now_ms,
    }
    keyed = after if after is not None else before
    assert keyed is not None
    return Record(
        key=key_of(pk, keyed),
        value=dumps(value),
        headers={"position": position, "op": op},
        timestamp_ms=source.ts_ms or now_ms,
    )


def truncate_records(
    source: SourceInfo, partitions: int, position: str, now_ms: int
) -> list[Record]:
    """A TRUNCATE of ``source.table``: one ``t`` event per partition of its topic."""
    value = dumps(
        {"op": "t", "before": None, "after": None, "source": source.as_dict(), "ts_ms": now_ms}
    )
    return [
        Record(
            key=k,
            value=value,
            headers={"position": position, "op": "t"},
            timestamp_ms=source.ts_ms or now_ms,
        )
        for k in key_per_partition(partitions)
    ]


def topic_name(prefix: str, db: str, table: str) -> str:
    """``<prefix>.<db>.<table>``: one topic per captured table."""
    return f"{prefix}.{db}.{table}"
