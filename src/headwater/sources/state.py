"""Durable source state in Headwater's PostgreSQL (``headwater.source_state``).

One row per source: whether the initial snapshot finished, how far it got per
table, the last position whose events are durable in the log, and kind-specific
facts (slot name, schema versions). Writes can join the caller's transaction, so a
source on the postgres log records its position atomically with the append.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb

from headwater.log.base import Conn


@dataclass
class SourceState:
    source: str
    kind: str
    snapshot_done: bool = False
    snapshot_progress: dict[str, Any] = field(default_factory=dict)
    position: str | None = None
    state: dict[str, Any] = field(default_factory=dict)


def load_state(conn: Conn, source: str) -> SourceState | None:
    """The stored state of ``source``, or None when it never ran."""
    row = conn.execute(
        "SELECT kind, snapshot_done, snapshot_progress, position, state"
        " FROM headwater.source_state WHERE source = %s",
        (source,),
    ).fetchone()
    if row is None:
        return None
    return SourceState(source, row[0], row[1], row[2] or {}, row[3], row[4] or {})


def save_state(conn: Conn, st: SourceState) -> None:
    """Upsert ``st`` (inside ``conn``'s current transaction, if any)."""
    conn.execute(
        "INSERT INTO headwater.source_state"
        " (source, kind, snapshot_done, snapshot_progress, position, state)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (source) DO UPDATE SET"
        " kind = EXCLUDED.kind, snapshot_done = EXCLUDED.snapshot_done,"
        " snapshot_progress = EXCLUDED.snapshot_progress, position = EXCLUDED.position,"
        " state = EXCLUDED.state, updated_at = now()",
        (
            st.source,
            st.kind,
            st.snapshot_done,
            Jsonb(st.snapshot_progress),
            st.position,
            Jsonb(st.state),
        ),
    )


def delete_state(conn: Conn, source: str) -> None:
    """Forget ``source`` (the next start takes a new snapshot)."""
    conn.execute("DELETE FROM headwater.source_state WHERE source = %s", (source,))


__all__ = ["SourceState", "delete_state", "load_state", "save_state"]
