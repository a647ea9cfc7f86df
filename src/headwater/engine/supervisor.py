"""``headwater up``: a process per source and per pipeline worker, restarted when
they die.

Each is a child process (``headwater source --name NAME`` or ``headwater worker
--pipeline NAME``). Children ask
the kernel for SIGTERM when the supervisor dies (``PR_SET_PDEATHSIG``), so a killed
supervisor leaves no orphan working on. Stop: SIGTERM to every child, wait up to
``grace_s`` for them to finish their batch and commit, then SIGKILL what remains.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class _Child:
    label: str
    args: list[str]
    index: int
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)


class Supervisor:
    """Starts, watches and stops the worker processes of all pipelines."""

    def __init__(
        self,
        config_path: Path,
        processes: dict[str, int],
        sources: tuple[str, ...] = (),
        grace_s: float = 30.0,
        output: Path | None = None,
    ):
        """``output``: a file the children's stdout and stderr are appended to
        (default: this process's own)."""
        self.config_path = config_path
        self.children = [
            _Child(f"source {name}", ["source", "--name", name], 0) for name in sources
        ] + [
            _Child(f"worker {name}", ["worker", "--pipeline", name], i)
            for name, n in processes.items()
            for i in range(n)
        ]
        self.grace_s = grace_s
        self.output = output
        self._stop = threading.Event()

    def _spawn(self, child: _Child) -> None:
        cmd = [sys.executable, "-m", "headwater", *child.args, "--config", str(self.config_path)]
        if self.output is None:
            child.proc = subprocess.Popen(cmd, preexec_fn=_die_with_parent)
        else:
            with self.output.open("ab") as out:  # the child keeps its own descriptor
                child.proc = subprocess.Popen(
                    cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
                )
        child.started_at = time.monotonic()
        log.info("started %s#%d (pid %d)", child.label, child.index, child.proc.pid)

    def start(self) -> None:
        for c in self.children:
            self._spawn(c)

    def watch_once(self) -> None:
        """Restart children that exited, with backoff (1 s doubling to 60 s)."""
        now = time.monotonic()
        for c in self.children:
            if c.proc is None or c.proc.poll() is None or self._stop.is_set():
                continue
            if c.next_start == 0.0:
                if now - c.started_at > 60:
                    c.restarts = 0
                delay = min(60.0, 2.0**c.restarts)
                c.next_start = now + delay
                log.warning(
                    "%s#%d exited with %s; restarting in %.0fs",
                    c.label,
                    c.index,
                    c.proc.returncode,
                    delay,
                )
            elif now >= c.next_start:
                c.restarts += 1
                c.next_start = 0.0
                self._spawn(c)

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.children if c.proc and c.proc.poll() is None]

    def stop(self) -> None:
        """Graceful stop; bounded by ``grace_s``."""
        self._stop.set()
        live = [c.proc for c in self.children if c.proc and c.proc.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for p in live:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in %.0fs; killing", p.pid, self.grace_s)
                p.kill()
                p.wait()


__all__ = ["Supervisor"]
