"""Wiring: settings → database, log, topics, workers. Used by the CLI and tests."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from types import FrameType

from headwater.config.model import PipelineConfig, Settings
from headwater.engine.registry import build_processor
from headwater.engine.worker import Worker, WorkerOptions, WorkerStats
from headwater.errors import ConfigError
from headwater.log.base import Log, TopicSpec, dlq_topic
from headwater.storage.database import connect, resolve_dsn
from headwater.storage.schema import migrate

log = logging.getLogger(__name__)


def open_log(settings: Settings, dsn: str) -> Log:
    """The configured log backend."""
    if settings.storage.log == "kafka":
        from headwater.log.kafka import KafkaLog

        return KafkaLog(settings.storage.kafka, dsn)
    from headwater.log.postgres import PostgresLog

    return PostgresLog(dsn)


@dataclass
class Runtime:
    settings: Settings
    dsn: str
    log: Log

    def close(self) -> None:
        self.log.close()


def bootstrap(settings: Settings, *, start: bool = True) -> Runtime:
    """Reach (or start) the database, migrate it, and create configured topics and
    each pipeline's dead-letter topic. Idempotent; safe from several processes."""
    dsn = resolve_dsn(settings, start=start)
    with connect(dsn) as conn:
        migrate(conn)
    lg = open_log(settings, dsn)
    for t in settings.all_topics():
        lg.create_topic(
            TopicSpec(t.name, t.partitions, t.compacted, t.retention_ms, t.retention_bytes)
        )
    for p in settings.all_pipelines():
        if settings.topic(p.input) is None:
            raise ConfigError(
                f"{settings.config_path}: pipelines.{p.name}.input: topic {p.input!r} is"
                f" not defined; add a [[topics]] entry named {p.input!r}"
            )
        lg.create_topic(TopicSpec(dlq_topic(p.name), 1))
    return Runtime(settings, dsn, lg)


def pipeline(settings: Settings, name: str) -> PipelineConfig:
    for p in settings.all_pipelines():
        if p.name == name:
            return p
    valid = ", ".join(p.name for p in settings.all_pipelines()) or "(none configured)"
    raise ConfigError(f"{settings.config_path}: no pipeline named {name!r}; valid: {valid}")


def worker_options(settings: Settings, p: PipelineConfig) -> WorkerOptions:
    w = settings.worker
    return WorkerOptions(
        batch_max_events=p.batch_max_events or w.batch_max_events,
        batch_max_ms=p.batch_max_ms if p.batch_max_ms is not None else w.batch_max_ms,
        retry_initial_ms=w.retry_initial_ms,
        retry_max_ms=w.retry_max_ms,
    )


def stop_on_signals(message: str = "stopping") -> threading.Event:
    """An event set by SIGINT or SIGTERM (logging ``message``). Processes install it
    first thing, so a stop request during start-up is honoured too."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: %s", signum, message)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def run_worker(settings: Settings, name: str) -> WorkerStats:
    """Run one worker process of pipeline ``name`` until SIGINT/SIGTERM.

    Signal handlers are installed first, so a stop request at any moment (even during
    start-up) is honoured: the current batch finishes and commits, then this returns.
    """
    stop = stop_on_signals(f"pipeline {name}: finishing the current batch")
    p = pipeline(settings, name)
    rt = bootstrap(settings, start=False)
    worker = Worker(
        pipeline=p.name,
        topic=p.input,
        processor=build_processor(p),
        log=rt.log,
        dsn=rt.dsn,
        options=worker_options(settings, p),
    )
    worker.stop_event = stop
    try:
        return worker.run()
    finally:
        rt.close()
