"""The source's durable state in Headwater's PostgreSQL (migration 0003).

``headwater.mysql_source_state`` holds the resume position; it is written in the same
transaction as the events appended up to it, so position and events commit together
(postgres log backend). ``headwater.mysql_snapshot_progress`` holds, per table, the
last primary key the snapshot has put in the log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from headwater.log.base import Conn

from .position import BinlogPosition


@dataclass(frozen=True)
class SourceState:
    position: BinlogPosition
    gtid: str | None
    snapshot_done: bool


@dataclass(frozen=True)
class TableProgress:
    last_key: list[Any] | None
    rows_read: int
    done: bool


def load(conn: Conn, source: str) -> SourceState | None:
    row = conn.execute(
        "SELECT binlog_file, binlog_pos, gtid, snapshot_done"
        " FROM headwater.mysql_source_state WHERE source = %s",
        (source,),
    ).fetchone()
    if row is None:
        return None
    return SourceState(BinlogPosition(row[0], int(row[1])), row[2], bool(row[3]))


def begin_snapshot(conn: Conn, source: str, start: BinlogPosition, tables: list[str]) -> None:
    """Record where streaming will start and one progress row per table (fresh start)."""
    conn.execute("DELETE FROM headwater.mysql_source_state WHERE source = %s", (source,))
    conn.execute(
        "INSERT INTO headwater.mysql_source_state (source, binlog_file, binlog_pos)"
        " VALUES (%s, %s, %s)",
        (source, start.file, start.pos),
    )
    for qualified in tables:
        db, tbl = qualified.split(".", 1)
        conn.execute(
            "INSERT INTO headwater.mysql_snapshot_progress (source, db, tbl) VALUES (%s, %s, %s)",
            (source, db, tbl),
        )


def progress(conn: Conn, source: str) -> dict[str, TableProgress]:
    rows = conn.execute(
        "SELECT db, tbl, last_key, rows_read, done FROM headwater.mysql_snapshot_progress"
        " WHERE source = %s",
        (source,),
    ).fetchall()
    return {f"{r[0]}.{r[1]}": TableProgress(r[2], int(r[3]), bool(r[4])) for r in rows}


def save_progress(
    conn: Conn, source: str, table: str, last_key: list[Any] | None, rows: int, done: bool
) -> None:
    db, tbl = table.split(".", 1)
    conn.execute(
        "INSERT INTO headwater.mysql_snapshot_progress"
        " (source, db, tbl, last_key, rows_read, done) VALUES (%s, %s, %s, %s::jsonb, %s, %s)"
        " ON CONFLICT (source, db, tbl) DO UPDATE SET last_key = EXCLUDED.last_key,"
        " rows_read = headwater.mysql_snapshot_progress.rows_read + EXCLUDED.rows_read,"
        " done = EXCLUDED.done",
        (source, db, tbl, json.dumps(last_key) if last_key is not None else None, rows, done),
    )


def finish_snapshot(conn: Conn, source: str) -> None:
    conn.execute(
        "UPDATE headwater.mysql_source_state SET snapshot_done = true, updated_at = now()"
        " WHERE source = %s",
        (source,),
    )


def save_position(conn: Conn, source: str, position: BinlogPosition, gtid: str | None) -> None:
    conn.execute(
        "UPDATE headwater.mysql_source_state SET binlog_file = %s, binlog_pos = %s,"
        " gtid = COALESCE(%s, gtid), updated_at = now() WHERE source = %s",
        (position.file, position.pos, gtid, source),
    )


def reset(conn: Conn, source: str) -> None:
    """Forget the source's state: the next start takes a new snapshot."""
    conn.execute("DELETE FROM headwater.mysql_source_state WHERE source = %s", (source,))
