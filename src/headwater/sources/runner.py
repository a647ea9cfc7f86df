"""Run a configured source until stopped: the body of ``headwater source --name X``.

Delivery, as the sources state it: on the ``postgres`` log a source appends events and
records its position in one transaction (exactly-once into the log); on ``kafka`` it
appends first and records the position after (at-least-once, whole transactions).
Either way the upstream position (slot LSN, binlog file/pos) is acknowledged only after
the events are durable.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from headwater.config.knowledge import FilesSourceConfig
from headwater.config.model import MySQLSourceConfig, PostgresSourceConfig, Settings
from headwater.errors import ConfigError

if TYPE_CHECKING:
    from headwater.engine.runtime import Runtime
    from headwater.sources.mysql.source import MySQLSource
    from headwater.sources.postgres.source import PostgresSource

log = logging.getLogger(__name__)


def source_config(
    settings: Settings, name: str
) -> PostgresSourceConfig | MySQLSourceConfig | FilesSourceConfig:
    for s in settings.sources:
        if s.name == name:
            return s
    valid = ", ".join(s.name for s in settings.sources) or "(none configured)"
    raise ConfigError(f"{settings.config_path}: no source named {name!r}; valid: {valid}")


def run_source(settings: Settings, name: str, stop: threading.Event) -> None:
    """Capture source ``name`` into the log until ``stop`` is set.

    Raises:
        ConfigError: no such source.
        SourceError: the source refused to start or lost its position (the message
            says how to fix it).
    """
    from headwater.engine.runtime import bootstrap
    from headwater.sources.postgres.source import PostgresSource

    cfg = source_config(settings, name)
    rt = bootstrap(settings, start=False)
    try:
        if isinstance(cfg, FilesSourceConfig):
            from headwater.sources.files.source import FileSource

            FileSource(cfg, rt.log, rt.dsn).run(stop)
            return
        src = _cdc_source(cfg, rt)
        try:
            if isinstance(src, PostgresSource):
                pg = src

                def forward_stop() -> None:
                    stop.wait()
                    pg.stop()

                threading.Thread(target=forward_stop, name="stop-watcher", daemon=True).start()
                pg.run()
            else:
                src.run(stop=stop)
        finally:
            src.close()
    finally:
        rt.close()


def resnapshot_source(settings: Settings, name: str) -> None:
    """Forget where source ``name`` stood, so its next start takes a new snapshot.

    PostgreSQL: drops the replication slot (if any) and the stored position; MySQL:
    the stored binlog position and snapshot progress. Events already in the log stay;
    the new snapshot re-sends every row as ``op = "r"``, which consumers upsert.

    Raises:
        ConfigError: no such source, or a files source (it re-reads its folder at
            every start; there is nothing to reset).
        SourceError: the slot is in use (stop ``headwater up`` first).
    """
    from headwater.engine.runtime import bootstrap

    cfg = source_config(settings, name)
    if isinstance(cfg, FilesSourceConfig):
        raise ConfigError(
            f"source {name!r} is a files source: it reconciles its folder at every start,"
            " so there is nothing to re-snapshot"
        )
    rt = bootstrap(settings, start=False)
    try:
        src = _cdc_source(cfg, rt)
        try:
            src.reset()
        finally:
            src.close()
    finally:
        rt.close()


def _cdc_source(
    cfg: PostgresSourceConfig | MySQLSourceConfig, rt: Runtime
) -> PostgresSource | MySQLSource:
    """The configured CDC source over the runtime's log. On the postgres log a source
    keeps its position in the log's own database, in the append's transaction;
    otherwise it needs Headwater's database explicitly."""
    state_dsn = None if rt.log.backend == "postgres" else rt.dsn
    if isinstance(cfg, PostgresSourceConfig):
        from headwater.sources.postgres.source import PostgresSource

        return PostgresSource(
            cfg.name,
            cfg.dsn.get_secret_value(),
            cfg.tables,
            rt.log,
            cfg.prefix,
            state_dsn=state_dsn,
            partitions=cfg.partitions,
        )
    from headwater.sources.mysql.source import MySQLSource

    return MySQLSource(
        cfg.name,
        cfg.dsn.get_secret_value(),
        cfg.tables,
        rt.log,
        cfg.prefix,
        state_dsn=state_dsn,
        server_id=cfg.server_id,
        partitions=cfg.partitions,
    )
