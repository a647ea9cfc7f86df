"""Child process for the profiles crash test (importable by spawned processes)."""

from __future__ import annotations

import threading
from typing import Any


def run_profiles_workers(dsn: str, cfg_json: dict[str, Any], topics: list[str]) -> None:
    """Run one profiles worker per topic, in threads, until the process is killed."""
    from headwater.config.profiles import ProfilesConfig
    from headwater.engine.worker import Worker, WorkerOptions
    from headwater.log.postgres import PostgresLog
    from headwater.profiles.processor import ProfilesProcessor

    cfg = ProfilesConfig.model_validate(cfg_json)
    log = PostgresLog(dsn)
    threads = []
    for topic in topics:
        w = Worker(
            pipeline=f"profiles-{topic}",
            topic=topic,
            processor=ProfilesProcessor(cfg, topic),
            log=log,
            dsn=dsn,
            options=WorkerOptions(batch_max_events=3, batch_max_ms=0, retry_initial_ms=10),
        )
        t = threading.Thread(target=w.run, daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
