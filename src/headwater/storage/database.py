"""Connections to Headwater's PostgreSQL, embedded or external, through one code path."""

from __future__ import annotations

import re
from typing import Any

import psycopg

from headwater.config.model import Settings
from headwater.errors import StorageError

EMBEDDED_DATABASE = "headwater"


def mask_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***`` (safe for logs and errors)."""
    dsn = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password=)[^\s&]*", r"\1***", dsn)


def resolve_dsn(settings: Settings, *, start: bool = True) -> str:
    """The DSN of Headwater's database; starts the embedded server when configured.

    With ``start=False`` an embedded server that is not running raises StorageError.
    """
    if not settings.storage.embedded:
        return settings.storage.postgres.get_secret_value()
    from headwater.storage.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(settings.data_dir / "postgres")
    if start:
        pg.ensure_running()
    elif not pg.is_running():
        raise StorageError(
            f"embedded PostgreSQL in {pg.data_dir} is not running; start it with 'headwater up'"
        )
    admin = pg.dsn("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,)
        ).fetchone()
        if not exists:
            conn.execute(f"CREATE DATABASE {EMBEDDED_DATABASE}")
    return pg.dsn(EMBEDDED_DATABASE)


def connect(dsn: str, *, autocommit: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a connection; errors say which (masked) DSN failed and why."""
    try:
        return psycopg.connect(dsn, autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"cannot connect to PostgreSQL at {mask_dsn(dsn)}: {reason}") from None
