"""Child processes a bench starts and always stops: process groups, no orphans."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the bench process dies (Linux)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 15) -> None:
    """SIGTERM the child's whole process group, then SIGKILL what is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace_s)
    # the leader may be gone while children it forked still run in its group
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@contextlib.contextmanager
def managed_process(
    cmd: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    grace_s: float = 15,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in its own session, output to ``log``; stopped on any exit.

    Ctrl-C, an exception or SIGTERM (bench/_common.py turns it into SystemExit) all
    leave through the ``finally``; a SIGKILLed bench takes the child down with it
    through PR_SET_PDEATHSIG.
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    try:
        yield proc
    finally:
        stop_group(proc, grace_s)


def log_tail(log: Path, chars: int = 3000) -> str:
    """The end of a child's log, for error messages."""
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"
