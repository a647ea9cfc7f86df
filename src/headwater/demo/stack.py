"""The demo's whole stack on one machine: its data dir, the operational databases, and
Headwater itself (the equivalent of ``headwater up`` with the API server).

Layout of the data dir (default ``.headwater-demo``)::

    .headwater-demo/
      .headwater-demo      marker: this folder belongs to the demo (it may be reset)
      headwater.toml       the demo config, rendered (works with every command)
      policies/*.md        the policy documents (the files source watches them)
      sources/             PostgreSQL of the operational systems: databases airline, loyalty
      state/postgres/      Headwater's own embedded PostgreSQL (log, stores)
      logs/stack.log       output of the sources and workers

The operational systems get their own embedded PostgreSQL, as they would in production:
Headwater's log and stores write WAL all the time, and a read-your-writes wait compares
the source's WAL position with what has been captured, so sharing a server would make
every ``fresh`` answer wait for a keepalive. The loyalty programme is a second database
of that server, captured by its own source (slot, publication): to Headwater it is
another system, and one server starts faster than two.

Guarantees: every run starts from a clean data dir (a dir without the marker is never
deleted); :meth:`DemoStack.close` stops the workers, the server and both PostgreSQL
servers, also after a failed start, so no process is left behind.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from headwater.config.loader import load_settings
from headwater.config.model import Settings
from headwater.demo.data import SeedCounts, seed
from headwater.errors import ConfigError, DemoError
from headwater.storage.database import connect
from headwater.storage.embedded import EmbeddedPostgres

MARKER = ".headwater-demo"
_PLACEHOLDER = re.compile(r"\$\{(HEADWATER_DEMO_[A-Z_]+)\}")

Report = Callable[[str], None]


@dataclass(frozen=True)
class DemoPaths:
    """Where each part of the demo lives under ``root``."""

    root: Path

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    @property
    def config(self) -> Path:
        return self.root / "headwater.toml"

    @property
    def policies(self) -> Path:
        return self.root / "policies"

    @property
    def sources(self) -> Path:
        return self.root / "sources"

    @property
    def state_postgres(self) -> Path:
        return self.root / "state" / "postgres"

    @property
    def log(self) -> Path:
        return self.root / "logs" / "stack.log"


def reset_data_dir(paths: DemoPaths) -> None:
    """Stop servers a previous run left in ``paths.root``, delete it, and create it
    anew with the marker.

    Raises:
        ConfigError: ``paths.root`` exists, is not empty and has no marker (it is not
            the demo's: nothing is deleted), or is not a folder.
    """
    root = paths.root
    if root.exists():
        if not root.is_dir():
            raise ConfigError(f"--data-dir {root}: not a folder")
        if any(root.iterdir()) and not paths.marker.exists():
            raise ConfigError(
                f"--data-dir {root}: not empty and not a demo data dir (no {MARKER} file);"
                " the demo resets its data dir on every run, so it only uses an empty or"
                " its own folder: pass another --data-dir"
            )
        for pg_dir in (paths.sources, paths.state_postgres):
            pg = EmbeddedPostgres(pg_dir)
            if pg.is_running():
                pg.stop()
        shutil.rmtree(root)
    for d in (root, paths.policies, paths.log.parent):
        d.mkdir(parents=True, exist_ok=True)
    paths.marker.write_text("headwater demo data dir: deleted and rebuilt by every run\n")


def check_port(host: str, port: int) -> None:
    """Raises ConfigError when ``host:port`` cannot be bound (taken, or not ours)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}); pass a free port"
            ) from None


def render_config(values: dict[str, str]) -> str:
    """The packaged demo config with its ``${HEADWATER_DEMO_*}`` placeholders filled.

    Raises:
        DemoError: the template names a placeholder ``values`` lacks.
    """
    text = resources.files("headwater.demo").joinpath("headwater.toml").read_text("utf-8")

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise DemoError(f"demo config template: no value for ${{{m.group(1)}}}")
        return values[m.group(1)]

    return _PLACEHOLDER.sub(sub, text)


def copy_policies(target: Path) -> list[Path]:
    """Copy the packaged policy documents into ``target``; their new paths."""
    out = []
    for item in resources.files("headwater.demo").joinpath("policies").iterdir():
        if item.name.endswith(".md"):
            dest = target / item.name
            dest.write_text(item.read_text("utf-8"), encoding="utf-8")
            out.append(dest)
    return sorted(out)


class DemoStack:
    """The running demo. Use as a context manager, or call :meth:`start` and
    :meth:`close` (``close`` is safe after a partial start and idempotent)."""

    def __init__(self, data_dir: Path, *, port: int, host: str = "127.0.0.1") -> None:
        self.paths = DemoPaths(data_dir.resolve())
        self.host, self.port = host, port
        self.settings: Settings | None = None
        self.seeded: SeedCounts | None = None
        self.airline_dsn = ""
        self.loyalty_dsn = ""
        self._sources_pg = EmbeddedPostgres(self.paths.sources)
        self._state_pg = EmbeddedPostgres(self.paths.state_postgres)
        self._rt: Any = None
        self._sup: Any = None
        self._server: Any = None
        self._server_thread: threading.Thread | None = None
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> DemoStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- start ------------------------------------------------------------------------

    def start(self, report: Report, *, ready_timeout_s: float = 240.0) -> None:
        """Reset the data dir, start and seed the operational databases, start
        Headwater (sources, workers, API server) and wait until the knowledge base and
        the profiles hold the seeded data.

        Raises:
            ConfigError: the port is taken or the data dir is not the demo's.
            StorageError: a PostgreSQL server cannot start.
            DemoError: the stack did not catch up within ``ready_timeout_s``.
        """
        check_port(self.host, self.port)
        reset_data_dir(self.paths)
        t0 = time.monotonic()
        admin = self._sources_pg.ensure_running()
        with connect(admin, autocommit=True) as conn:
            for db in ("airline", "loyalty"):
                conn.execute(f"CREATE DATABASE {db}")
        self.airline_dsn = self._sources_pg.dsn("airline")
        self.loyalty_dsn = self._sources_pg.dsn("loyalty")
        self.seeded = seed(self.airline_dsn, self.loyalty_dsn)
        s = self.seeded
        report(
            f"operational PostgreSQL ready and seeded in {time.monotonic() - t0:.1f}s:"
            f" airline ({s.customers} customers, {s.bookings} bookings, {s.flights} flights,"
            f" {s.hotels} hotels, {s.prices} prices), loyalty ({s.members} members)"
        )
        copy_policies(self.paths.policies)
        self.paths.config.write_text(
            render_config(
                {
                    "HEADWATER_DEMO_PORT": str(self.port),
                    "HEADWATER_DEMO_AIRLINE_DSN": self.airline_dsn,
                    "HEADWATER_DEMO_LOYALTY_DSN": self.loyalty_dsn,
                    "HEADWATER_DEMO_POLICIES": str(self.paths.policies),
                }
            ),
            encoding="utf-8",
        )
        self.settings = load_settings(self.paths.config)
        self._start_headwater(report)
        self._wait_ready(report, ready_timeout_s)

    def _start_headwater(self, report: Report) -> None:
        from headwater.engine.runtime import bootstrap
        from headwater.engine.supervisor import Supervisor

        assert self.settings is not None
        settings = self.settings
        t0 = time.monotonic()
        self._rt = bootstrap(settings)
        self._sup = Supervisor(
            self.paths.config,
            {p.name: p.processes or settings.worker.processes for p in settings.all_pipelines()},
            tuple(s.name for s in settings.sources),
            grace_s=20.0,
            output=self.paths.log,
        )
        self._sup.start()
        self._watcher = threading.Thread(target=self._watch, name="demo-supervisor", daemon=True)
        self._watcher.start()
        self._start_server()
        report(
            f"Headwater started in {time.monotonic() - t0:.1f}s: {len(settings.sources)}"
            f" sources, {len(settings.all_pipelines())} pipelines"
            f" (output in {self.paths.log})"
        )

    def _watch(self) -> None:
        while not self._watch_stop.wait(0.5):
            self._sup.watch_once()

    def _start_server(self) -> None:
        import uvicorn

        from headwater.serving.app import create_app

        self._server = uvicorn.Server(
            uvicorn.Config(
                create_app(self._rt), host=self.host, port=self.port, log_level="warning"
            )
        )
        self._server_thread = threading.Thread(target=self._server.run, name="http", daemon=True)
        self._server_thread.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if not self._server_thread.is_alive() or time.monotonic() > deadline:
                raise DemoError(f"the API server did not start on {self.url}")
            time.sleep(0.1)

    def _wait_ready(self, report: Report, timeout_s: float) -> None:
        """Until every pipeline has applied everything the sources hold now."""
        from headwater.serving.freshness import wait_fresh

        assert self.settings is not None
        t0 = time.monotonic()
        pipelines = list(self.settings.all_pipelines())
        last = ""
        with connect(self._rt.dsn, autocommit=True) as conn:
            while True:
                fr = wait_fresh(
                    self.settings, conn, self._rt.log, pipelines, timeout_s=1.0, poll_s=0.05
                )
                line = _progress_line(conn)
                if line != last:
                    report(f"{line} ({time.monotonic() - t0:.0f}s)")
                    last = line
                if fr.caught_up:
                    break
                if time.monotonic() - t0 > timeout_s:
                    raise DemoError(
                        f"the stack did not catch up with the sources in {timeout_s:.0f}s;"
                        f" see {self.paths.log}"
                    )

    # -- stop -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the workers and sources (they commit what they hold), the API server,
        and both PostgreSQL servers. Each step runs even when an earlier one fails."""
        steps: list[Callable[[], None]] = [self._stop_supervisor, self._stop_server]
        steps += [self._close_runtime, self._state_pg.stop, self._sources_pg.stop]
        errors = []
        for step in steps:
            try:
                step()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def stop_watching(self) -> None:
        """Restart no more children that exit: the first step of a shutdown (on Ctrl-C
        the children get SIGINT from the terminal and exit on their own)."""
        self._watch_stop.set()
        if self._watcher is not None:
            self._watcher.join(5)

    def _stop_supervisor(self) -> None:
        self.stop_watching()
        if self._sup is not None:
            self._sup.stop()
            self._sup = None

    def _stop_server(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._server_thread is not None:
                self._server_thread.join(10)
            self._server = None

    def _close_runtime(self) -> None:
        if self._rt is not None:
            with contextlib.suppress(Exception):
                self._rt.close()
            self._rt = None

    def child_pids(self) -> list[int]:
        """The live worker and source processes."""
        return list(self._sup.pids()) if self._sup is not None else []


def _progress_line(conn: Any) -> str:
    docs, chunks, persons = conn.execute(
        "SELECT (SELECT count(*) FROM headwater_kb.documents),"
        " (SELECT count(*) FROM headwater_kb.chunks),"
        " (SELECT count(*) FROM headwater_profiles.profiles)"
    ).fetchone()
    return f"indexed {docs} documents ({chunks} chunks), {persons} customer profiles"
