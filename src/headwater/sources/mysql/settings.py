"""Connection settings of a MySQL/MariaDB source, from a DSN or keyword arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from headwater.errors import ConfigError


@dataclass(frozen=True)
class MySQLSettings:
    """Where the source database is and how to log in.

    The user needs ``SELECT``, ``RELOAD``, ``REPLICATION SLAVE`` and ``REPLICATION
    CLIENT`` (MariaDB: ``BINLOG MONITOR``). The password is never shown in ``repr``.
    """

    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = field(default="", repr=False)
    unix_socket: str | None = None
    connect_timeout: float = 10.0

    @classmethod
    def from_dsn(cls, dsn: str) -> MySQLSettings:
        """Parse ``mysql://user:password@host:port`` (``mariadb://`` works too).

        Raises:
            ConfigError: not a mysql:// or mariadb:// URL.
        """
        parts = urlsplit(dsn)
        if parts.scheme not in ("mysql", "mariadb"):
            raise ConfigError(
                f"MySQL source DSN must look like mysql://user:password@host:3306, "
                f"got scheme {parts.scheme!r}"
            )
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
        )

    def pymysql_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``pymysql.connect`` (and the binlog stream)."""
        kw: dict[str, Any] = {
            "user": self.user,
            "password": self.password,
            "connect_timeout": self.connect_timeout,
        }
        if self.unix_socket:
            kw["unix_socket"] = self.unix_socket
        else:
            kw["host"] = self.host
            kw["port"] = self.port
        return kw

    def describe(self) -> str:
        """Where this connects, without the password (for messages)."""
        where = self.unix_socket or f"{self.host}:{self.port}"
        return f"{self.user}@{where}"
