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

from headwater.config.knowledge import FilesSourceConfig
from headwater.config.model import MySQLSourceConfig, PostgresSourceConfig, Settings
from headwater.errors import ConfigError

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

    cfg = source_config(settings, name)
    rt = bootstrap(settings, start=False)
    # On the postgres log the source keeps its position in the log's own database,
    # in the append's transaction; otherwise it needs Headwater's database explicitly.
    state_dsn = None if rt.log.backend == "postgres" else rt.dsn
    try:
        if isinstance(cfg, FilesSourceConfig):
            from headwater.sources.files.source import FileSource

            FileSource(cfg, rt.log, rt.dsn).run(stop)
        elif isinstance(cfg, PostgresSourceConfig):
            from headwater.sources.postgres.source import PostgresSource

            pg = PostgresSource(
                cfg.name,
                cfg.dsn.get_secret_value(),
                cfg.tables,
                rt.log,
                cfg.prefix,
                state_dsn=state_dsn,
                partitions=cfg.partitions,
            )

            def forward_stop() -> None:
                stop.wait()
                pg.stop()

            watcher = threading.Thread(target=forward_stop, name="stop-watcher", daemon=True)
            watcher.start()
            pg.run()
        else:
            from headwater.sources.mysql.source import MySQLSource

            my = MySQLSource(
                cfg.name,
                cfg.dsn.get_secret_value(),
                cfg.tables,
                rt.log,
                cfg.prefix,
                state_dsn=state_dsn,
                server_id=cfg.server_id,
                partitions=cfg.partitions,
            )
            try:
                my.run(stop=stop)
            finally:
                my.close()
    finally:
        rt.close()
