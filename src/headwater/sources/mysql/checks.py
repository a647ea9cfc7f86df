"""Preflight: refuse to start unless the server writes a binlog this source can read.

Every refusal is a :class:`~headwater.errors.SourceError` that names the setting and
the line of server configuration that fixes it. Nothing is skipped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headwater.errors import SourceError

from .position import BinlogPosition


@dataclass(frozen=True)
class ServerInfo:
    version: str
    is_mariadb: bool
    binlog_row_metadata: str


def _variables(cur: Any, names: list[str]) -> dict[str, str]:
    placeholders = ", ".join(["%s"] * len(names))
    cur.execute(
        f"SELECT LOWER(VARIABLE_NAME), VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES"
        f" WHERE LOWER(VARIABLE_NAME) IN ({placeholders})",
        names,
    )
    return {str(k): str(v) for k, v in cur.fetchall()}


def check_server(conn: Any, where: str) -> ServerInfo:
    """Check the binlog settings on an open pymysql connection.

    Requires ``log_bin=ON``, ``binlog_format=ROW``, ``binlog_row_image=FULL`` and, where
    the server has it, ``binlog_row_metadata=FULL`` (column names in the binlog, so
    rows written after an ALTER TABLE decode with the new names).

    Raises:
        SourceError: a setting is wrong; the message says which and how to fix it.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        version = str(cur.fetchone()[0])
        v = _variables(cur, ["log_bin", "binlog_format", "binlog_row_image", "binlog_row_metadata"])
    fix = "set it in the server configuration ([mysqld] section) and restart the server"
    if v.get("log_bin", "OFF").upper() not in ("ON", "1"):
        raise SourceError(
            f"MySQL source at {where}: the binary log is off (log_bin=OFF), so there is no "
            f"change stream to read; start the server with log_bin (e.g. log-bin=mysql-bin, "
            f"binlog_format=ROW, binlog_row_image=FULL) — {fix}"
        )
    fmt = v.get("binlog_format", "").upper()
    if fmt != "ROW":
        raise SourceError(
            f"MySQL source at {where}: binlog_format is {fmt or 'unknown'}, but change "
            f"capture needs row events; set binlog_format=ROW (SET GLOBAL binlog_format='ROW' "
            f"affects new sessions only) — {fix}"
        )
    image = v.get("binlog_row_image", "FULL").upper()
    if image != "FULL":
        raise SourceError(
            f"MySQL source at {where}: binlog_row_image is {image}; before/after images need "
            f"binlog_row_image=FULL — {fix}"
        )
    metadata = v.get("binlog_row_metadata", "").upper()
    if "binlog_row_metadata" in v and metadata != "FULL":
        raise SourceError(
            f"MySQL source at {where}: binlog_row_metadata is {metadata}; without FULL the "
            f"binlog carries no column names and rows after an ALTER TABLE would decode "
            f"with the wrong names; set binlog_row_metadata=FULL — {fix}"
        )
    return ServerInfo(version, "mariadb" in version.lower(), metadata)


def binlog_files(conn: Any) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SHOW BINARY LOGS")
        return [str(r[0]) for r in cur.fetchall()]


def check_position_available(conn: Any, position: BinlogPosition, where: str, fix: str) -> None:
    """Refuse to resume from a binlog file the server no longer has.

    Raises:
        SourceError: the file was purged (expire_logs_days, PURGE BINARY LOGS); the
            changes in between are lost to this source and it must snapshot again.
    """
    files = binlog_files(conn)
    if position.file not in files:
        oldest = files[0] if files else "none"
        raise SourceError(
            f"MySQL source at {where}: the binlog file {position.file} to resume from is no "
            f"longer on the server (oldest kept: {oldest}); changes since {position} cannot "
            f"be read. Take a new snapshot: {fix}"
        )


def current_position(conn: Any) -> BinlogPosition:
    """The server's current binlog end (``SHOW MASTER STATUS``).

    Raises:
        SourceError: the binary log is off.
    """
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    if not row:
        raise SourceError("the binary log is off (SHOW MASTER STATUS is empty)")
    return BinlogPosition(str(row[0]), int(row[1]))
