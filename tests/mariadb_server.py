"""Session fixture: a real MariaDB server with the binlog on, started by the tests.

``mariadb-install-db`` initialises a temporary datadir, ``mariadbd`` runs on a free
port of 127.0.0.1 (and a socket in the datadir) with ROW binlog, full row images and
full row metadata (column names in the binlog). The server runs in its own process
group and is shut down at the end of the session, with no process left behind.
Import the fixture into a conftest or test module.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from headwater.testing import free_port

USER = "hw"
PASSWORD = "hw-secret"


@dataclass
class MariaDB:
    """A running server: connection settings for pymysql and the owning process."""

    host: str
    port: int
    socket: Path
    datadir: Path
    proc: subprocess.Popen[bytes]

    @property
    def settings(self) -> dict[str, Any]:
        """pymysql connection settings of the replication user (TCP)."""
        return {"host": self.host, "port": self.port, "user": USER, "password": PASSWORD}

    def connect(self, **kwargs: Any) -> Any:
        """An autocommit pymysql connection as root over the socket."""
        import pymysql

        kwargs.setdefault("autocommit", True)
        return pymysql.connect(unix_socket=str(self.socket), user="root", **kwargs)

    def execute(self, *statements: str, database: str | None = None) -> list[Any]:
        """Run statements as root; return the rows of the last one."""
        conn = self.connect(database=database)
        try:
            rows: list[Any] = []
            with conn.cursor() as cur:
                for s in statements:
                    cur.execute(s)
                    rows = list(cur.fetchall())
            return rows
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def start_mariadb(base: Path, extra_args: Sequence[str] = (), binlog: bool = True) -> MariaDB:
    """Initialise a datadir under ``base`` and start ``mariadbd``; wait until it answers.

    Raises:
        RuntimeError: the server did not start (its error log is in the message).
    """
    import pymysql

    for tool in ("mariadb-install-db", "mariadbd"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            pytest.skip(f"{tool} is not installed")
    datadir = base / "data"
    as_root = ["--user=root"] if os.geteuid() == 0 else []
    subprocess.run(
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *as_root,
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    sock = base / "sock"
    binlog_args = (
        [
            "--log-bin=mysql-bin",
            "--binlog-format=ROW",
            "--binlog-row-image=FULL",
            "--binlog-row-metadata=FULL",
        ]
        if binlog
        else []
    )
    mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    err_log = base / "mariadbd.err"
    with open(err_log, "wb") as log_file:
        proc = subprocess.Popen(
            [
                mariadbd,
                "--no-defaults",
                *as_root,
                f"--datadir={datadir}",
                f"--socket={sock}",
                f"--port={port}",
                "--bind-address=127.0.0.1",
                f"--pid-file={base / 'mariadbd.pid'}",
                "--server-id=1",
                "--log-basename=hw",
                "--skip-name-resolve",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_unicode_ci",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=16M",
                "--innodb-flush-log-at-trx-commit=2",
                "--sync-binlog=0",
                *binlog_args,
                *extra_args,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped as a whole
        )
    server = MariaDB("127.0.0.1", port, sock, datadir, proc)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mariadbd exited: {err_log.read_text()[-2000:]}")
        try:
            server.execute("SELECT 1")
            break
        except pymysql.err.OperationalError as exc:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"mariadbd did not answer: {err_log.read_text()[-2000:]}"
                ) from exc
            time.sleep(0.1)
    server.execute(
        f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'",
        f"GRANT SELECT, RELOAD, LOCK TABLES, REPLICATION SLAVE, REPLICATION CLIENT,"
        f" BINLOG MONITOR ON *.* TO '{USER}'@'%'",
    )
    return server


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    """A MariaDB 10.11 server with ROW binlog, running for the whole test session."""
    server = start_mariadb(tmp_path_factory.mktemp("mariadb"))
    try:
        yield server
    finally:
        server.stop()
