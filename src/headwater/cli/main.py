"""The ``headwater`` command line.

Exit codes: 0 ok, 2 usage or configuration error, 1 runtime failure.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from headwater import __version__
from headwater.cli import knowledge as knowledge_cli
from headwater.cli import profiles as profiles_cli
from headwater.config.loader import DEFAULT_CONFIG, load_settings
from headwater.config.model import Settings
from headwater.errors import ConfigError, HeadwaterError

app = typer.Typer(
    name="headwater",
    help="Headwater keeps the context of generative-AI applications fresh.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)
app.add_typer(profiles_cli.app, name="profiles")

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="Path to headwater.toml.", show_default=True)
]


def _settings(path: Path) -> Settings:
    return load_settings(path)


def _runtime(settings: Settings) -> Any:
    from headwater.engine.runtime import Runtime, open_log
    from headwater.storage.database import resolve_dsn

    dsn = resolve_dsn(settings, start=False)
    return Runtime(settings, dsn, open_log(settings, dsn))


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder for headwater.toml.")] = Path("."),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter headwater.toml."""
    from importlib import resources

    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "headwater.toml"
    if target.exists() and not force:
        raise ConfigError(f"{target}: already exists; use --force to overwrite")
    target.write_text(
        resources.files("headwater.config").joinpath("starter.toml").read_text("utf-8")
    )
    out.print(f"wrote {target}; start with: headwater up --config {target}")


@app.command()
def up(
    config: ConfigOpt = DEFAULT_CONFIG,
    no_server: Annotated[bool, typer.Option(help="Do not start the HTTP server.")] = False,
) -> None:
    """Start everything: embedded PostgreSQL, the workers of every pipeline, and the
    HTTP server (/healthz, /metrics). Stops gracefully on Ctrl-C or SIGTERM."""
    from headwater.engine.runtime import bootstrap, stop_on_signals
    from headwater.engine.supervisor import Supervisor

    settings = _settings(config)
    if settings.server.enabled and not no_server:
        from headwater.serving.auth import check_exposure

        check_exposure(settings)  # before anything starts: no open API on the network
    started_pg = None
    if settings.storage.embedded:
        from headwater.storage.embedded import EmbeddedPostgres

        pg = EmbeddedPostgres(settings.data_dir / "postgres")
        if not pg.is_running():
            started_pg = pg
    rt = bootstrap(settings)
    stop = stop_on_signals("stopping sources, workers and the server")
    sup = Supervisor(
        config.resolve(),
        {p.name: p.processes or settings.worker.processes for p in settings.all_pipelines()},
        tuple(s.name for s in settings.sources),
    )
    sup.start()
    server = None
    if settings.server.enabled and not no_server:
        server = _start_server(rt, settings)
        url = f"http://{settings.server.host}:{settings.server.port}"
        out.print(f"headwater {__version__}: dashboard {url}/  (OpenAPI: {url}/openapi.json)")
    out.print(
        f"{len(settings.sources)} source(s), {len(sup.children) - len(settings.sources)} "
        f"worker(s) for {len(settings.all_pipelines())} pipeline(s); Ctrl-C to stop"
    )
    next_maintenance = time.monotonic() + settings.worker.maintenance_interval_s
    try:
        while not stop.wait(0.5):
            sup.watch_once()
            if time.monotonic() >= next_maintenance:
                try:
                    rt.log.enforce_retention()
                except HeadwaterError as exc:
                    logging.getLogger("headwater").warning("retention failed: %s", exc)
                next_maintenance = time.monotonic() + settings.worker.maintenance_interval_s
    finally:
        out.print("stopping…")
        sup.stop()
        if server is not None:
            server.should_exit = True
        rt.close()
        if started_pg is not None:
            started_pg.stop()
    out.print("stopped")


def _start_server(rt: Any, settings: Settings) -> Any:
    import uvicorn

    from headwater.serving.app import create_app

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(rt),
            host=settings.server.host,
            port=settings.server.port,
            log_level="warning",
        )
    )
    threading.Thread(target=server.run, name="http", daemon=True).start()
    return server


@app.command()
def status(
    config: ConfigOpt = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Pipelines: lag, watermarks, throughput counters and dead letters."""
    from headwater.engine.status import pipeline_statuses, source_statuses

    rt = _runtime(_settings(config))
    try:
        sts = pipeline_statuses(rt)
        srcs = source_statuses(rt)
    finally:
        rt.close()
    if as_json:
        print(
            json.dumps(
                {"sources": [s.to_json() for s in srcs], "pipelines": [s.to_json() for s in sts]},
                indent=2,
            )
        )
        return
    if srcs:
        st_table = Table(title="sources")
        for col in ("source", "kind", "tables", "snapshot", "position", "slot lag"):
            st_table.add_column(col)
        for x in srcs:
            st_table.add_row(
                x.name,
                x.kind,
                ", ".join(x.tables),
                x.snapshot_text(),
                x.position or "-",
                x.error or ("-" if x.lag_bytes is None else f"{x.lag_bytes} B"),
            )
        out.print(st_table)
    table = Table(title="pipelines")
    for col in (
        "pipeline",
        "input",
        "processor",
        "events",
        "lag",
        "dead letters",
        "watermark",
        "last batch",
    ):
        table.add_column(col)
    for s in sts:
        wm = ", ".join(f"{p}:{v}" for p, v in s.watermark.items() if v) or "-"
        table.add_row(
            s.name,
            s.input,
            s.processor,
            str(s.events),
            str(s.lag),
            f"{s.dead_letters} ({s.dlq_topic})",
            wm,
            s.last_batch_at.strftime("%H:%M:%S") if s.last_batch_at else "-",
        )
    out.print(table)


@app.command()
def topics(
    config: ConfigOpt = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the log's topics with their partitions and offsets."""
    rt = _runtime(_settings(config))
    try:
        rows = []
        for t in rt.log.topics():
            parts = rt.log.partitions(t.name)
            rows.append(
                {
                    "name": t.name,
                    "partitions": t.partitions,
                    "compacted": t.compacted,
                    "retention_ms": t.retention_ms,
                    "retention_bytes": t.retention_bytes,
                    "records": sum(p.end_offset - p.start_offset for p in parts),
                    "end_offsets": [p.end_offset for p in parts],
                }
            )
    finally:
        rt.close()
    if as_json:
        print(json.dumps({"topics": rows}, indent=2))
        return
    table = Table(title=f"topics ({rt.log.backend} log)")
    for col in ("topic", "partitions", "records", "end offsets", "compacted", "retention"):
        table.add_column(col)
    for r in rows:
        ret = (
            ", ".join(
                x
                for x in (
                    f"{r['retention_ms']} ms" if r["retention_ms"] else "",
                    f"{r['retention_bytes']} B" if r["retention_bytes"] else "",
                )
                if x
            )
            or "-"
        )
        table.add_row(
            r["name"],
            str(r["partitions"]),
            str(r["records"]),
            " ".join(map(str, r["end_offsets"])),
            "yes" if r["compacted"] else "no",
            ret,
        )
    out.print(table)


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="Topic to read.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    n: Annotated[int, typer.Option("-n", help="Records per partition to show first.")] = 10,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new records.")
    ] = False,
    partition: Annotated[int | None, typer.Option(help="Only this partition.")] = None,
) -> None:
    """Print a topic's latest records (one JSON object per line)."""
    rt = _runtime(_settings(config))
    try:
        parts = rt.log.partitions(topic)
        pos = {
            p.partition: max(p.start_offset, p.end_offset - n)
            for p in parts
            if partition is None or p.partition == partition
        }
        if not pos:
            raise ConfigError(f"topic {topic!r} has no partition {partition}")
        while True:
            got = 0
            for p, off in pos.items():
                for r in rt.log.read(topic, p, off, 500):
                    print(
                        json.dumps(
                            {
                                "partition": r.partition,
                                "offset": r.offset,
                                "ts_ms": r.timestamp_ms,
                                "key": _text(r.key),
                                "value": _text(r.value),
                                "headers": dict(r.headers),
                            }
                        ),
                        flush=True,
                    )
                    pos[p] = r.offset + 1
                    got += 1
            if not follow:
                break
            if not got:
                time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        rt.close()


def _text(b: bytes | None) -> str | None:
    if b is None:
        return None
    try:
        return b.decode()
    except UnicodeDecodeError:
        import base64

        return "base64:" + base64.b64encode(b).decode()


@app.command(hidden=True)
def worker(
    pipeline: Annotated[str, typer.Option(help="Pipeline to run.")],
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Run one worker process of a pipeline (started by `headwater up`)."""
    from headwater.engine.runtime import run_worker

    run_worker(_settings(config), pipeline)


@app.command()
def demo(
    data_dir: Annotated[
        Path, typer.Option(help="The demo's folder; reset on every run (only ever its own).")
    ] = Path(".headwater-demo"),
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port of the API and dashboard.")
    ] = 8765,
    rate: Annotated[
        float,
        typer.Option(min=0, max=200, help="Simulated source changes per second (0: no simulator)."),
    ] = 2.0,
    once: Annotated[
        bool, typer.Option("--once", help="Exit after the walk-through (non-zero if it fails).")
    ] = False,
) -> None:
    """The travel-assistant demo on the embedded default: two operational databases
    and a folder of policies captured live, a scripted walk-through, then a stream of
    simulated changes until Ctrl-C."""
    from headwater.demo.app import DemoOptions, run

    _quiet_logs(data_dir / "logs" / "demo.log")
    try:
        run(DemoOptions(data_dir, port, rate, once), out)
    except KeyboardInterrupt:
        err.print("interrupted; everything the demo started was stopped")
        raise typer.Exit(130) from None


def _quiet_logs(path: Path) -> None:
    """This process's log records go to ``path`` instead of the terminal (the demo's
    output is its walk-through); created after the data dir reset, so kept open."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(_LateFileHandler(path))


class _LateFileHandler(logging.Handler):
    """Appends to a file that may not exist yet (the demo creates its folder later);
    records before then are dropped."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.INFO)
        self.path = path
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.path.parent.is_dir():
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write(self.format(record) + "\n")
        except OSError:
            pass


@app.command(hidden=True)
def source(
    name: Annotated[str, typer.Option(help="Source to run.")],
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Run one configured source (started by `headwater up`); SIGTERM stops it after
    the transactions it holds are durable and acknowledged."""
    from headwater.engine.runtime import stop_on_signals
    from headwater.sources.runner import run_source

    stop = stop_on_signals(f"source {name}: appending what it holds, then stopping")
    run_source(_settings(config), name, stop)


@app.command()
def resnapshot(
    name: Annotated[str, typer.Argument(help="The source to snapshot again.")],
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Forget where a CDC source stood (its replication slot or binlog position), so
    its next start takes a new snapshot. Stop `headwater up` first. Rows already in the
    log stay; the snapshot re-sends every row as op 'r' and consumers upsert them."""
    from headwater.sources.runner import resnapshot_source

    resnapshot_source(_settings(config), name)
    out.print(f"source {name}: position forgotten; the next start takes a new snapshot")


app.command()(knowledge_cli.search)


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


from headwater.cli import serving as _serving  # noqa: E402

app.command()(_serving.ask)
app.command()(_serving.key)


def main() -> None:
    """Entry point: maps errors to exit codes (2 config/usage, 1 runtime)."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        app()
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except HeadwaterError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
