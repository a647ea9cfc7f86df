"""Headwater's PostgreSQL: the embedded runtime, connections and schema migrations."""

from headwater.storage.database import connect, mask_dsn, resolve_dsn
from headwater.storage.schema import migrate

__all__ = ["connect", "mask_dsn", "migrate", "resolve_dsn"]
