"""The initial snapshot: rows read in one consistent view, at a known binlog position.

MariaDB (10.0+, InnoDB) reports the binlog position that matches a ``START TRANSACTION
WITH CONSISTENT SNAPSHOT`` in the status variables ``binlog_snapshot_file`` and
``binlog_snapshot_position``: every transaction committed before that position is in
the view, none after it. No global lock is taken. On MySQL, which lacks them, the view
is opened under a brief ``FLUSH TABLES WITH READ LOCK`` and the position is read with
``SHOW MASTER STATUS`` before the lock is released.

Tables are read in primary-key order, in chunks (keyset pagination), all in that one
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from headwater.errors import SourceError

from .checks import current_position
from .position import BinlogPosition


def quote(name: str) -> str:
    """A MySQL identifier in backquotes."""
    return "`" + name.replace("`", "``") + "`"


def open_consistent_snapshot(conn: Any) -> BinlogPosition:
    """Start a consistent-snapshot transaction on ``conn``; return its binlog position.

    The session's time zone is set to UTC so TIMESTAMP values read here equal the UTC
    values the binlog carries.
    """
    with conn.cursor() as cur:
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("SET time_zone = '+00:00'")
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        cur.execute("SHOW SESSION STATUS LIKE 'binlog_snapshot_%'")
        status = {str(k).lower(): str(v) for k, v in cur.fetchall()}
        file = status.get("binlog_snapshot_file", "")
        if file:
            return BinlogPosition(file, int(status["binlog_snapshot_position"]))
        # MySQL: hold the global read lock only while the view opens.
        cur.execute("ROLLBACK")
        cur.execute("FLUSH TABLES WITH READ LOCK")
        try:
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            position = current_position(conn)
        finally:
            cur.execute("UNLOCK TABLES")
        return position


def estimated_rows(conn: Any, db: str, table: str) -> int | None:
    """The row count the server estimates for ``db.table`` (None: unknown)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT TABLE_ROWS FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (db, table),
        )
        row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else None


def primary_key(conn: Any, db: str, table: str) -> list[str]:
    """The primary-key columns of ``db.table`` in key order.

    Raises:
        SourceError: the table does not exist or has no primary key.
    """
    with conn.cursor() as cur:
        cur.execute(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (db, table),
        )
        if cur.fetchone() is None:
            raise SourceError(
                f"captured table {db}.{table} does not exist (or the user cannot see it); "
                f"fix the source's tables list or grant SELECT on it"
            )
        cur.execute(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE"
            " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY'"
            " ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        cols = [str(r[0]) for r in cur.fetchall()]
    if not cols:
        raise SourceError(
            f"captured table {db}.{table} has no primary key; change events are keyed by "
            f"it, so add one (ALTER TABLE {db}.{table} ADD PRIMARY KEY (...)) or leave the "
            f"table out of the source"
        )
    return cols


def read_chunk(
    conn: Any,
    db: str,
    table: str,
    pk: Sequence[str],
    after_key: Sequence[Any] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Up to ``limit`` rows with primary key greater than ``after_key``, in key order."""
    cols = ", ".join(quote(c) for c in pk)
    sql = f"SELECT * FROM {quote(db)}.{quote(table)}"
    params: list[Any] = []
    if after_key is not None:
        marks = ", ".join(["%s"] * len(pk))
        sql += f" WHERE ({cols}) > ({marks})"
        params.extend(after_key)
    sql += f" ORDER BY {cols} LIMIT %s"
    params.append(limit)
    with conn.cursor() as cur:
        cur.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
