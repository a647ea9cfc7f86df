"""Versioned schema migrations: plain SQL files, applied once, in order.

Files are ``storage/migrations/NNNN_name.sql``. Each runs in its own transaction and
is recorded in ``headwater.schema_migrations`` with its checksum; an edited, already
applied file is an error (write a new migration instead). A session advisory lock
makes concurrent ``migrate()`` calls from several processes safe.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from headwater.errors import StorageError

_LOCK_KEY = 0x4857_4D49  # "HWMI"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    """All migrations shipped with this version of Headwater, oldest first."""
    out = []
    for entry in resources.files("headwater.storage.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            out.append(Migration(int(version), name, entry.read_text(encoding="utf-8")))
    out.sort(key=lambda m: m.version)
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise StorageError(f"duplicate migration versions: {versions}")
    return out


def migrate(conn: psycopg.Connection[Any]) -> list[int]:
    """Apply pending migrations; return the versions applied now.

    Raises:
        StorageError: a migration failed (rolled back) or an applied one was edited.
    """
    if not conn.autocommit:
        conn.commit()
    prev = conn.autocommit
    conn.autocommit = True
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            return _apply(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    finally:
        conn.autocommit = prev


def _apply(conn: psycopg.Connection[Any]) -> list[int]:
    conn.execute("CREATE SCHEMA IF NOT EXISTS headwater")
    conn.execute(
        """CREATE TABLE IF NOT EXISTS headwater.schema_migrations (
               version integer PRIMARY KEY,
               name text NOT NULL,
               checksum text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    applied = dict(
        conn.execute("SELECT version, checksum FROM headwater.schema_migrations").fetchall()
    )
    done = []
    for m in available_migrations():
        if m.version in applied:
            if applied[m.version] != m.checksum:
                raise StorageError(
                    f"migration {m.version:04d}_{m.name} was edited after it was applied; "
                    "add a new migration instead"
                )
            continue
        try:
            with conn.transaction():
                conn.execute(m.sql.encode())
                conn.execute(
                    "INSERT INTO headwater.schema_migrations (version, name, checksum)"
                    " VALUES (%s, %s, %s)",
                    (m.version, m.name, m.checksum),
                )
        except psycopg.Error as exc:
            raise StorageError(f"migration {m.version:04d}_{m.name} failed: {exc}") from None
        done.append(m.version)
    return done
