"""``GET /v1/pipelines``: what ``headwater status`` shows, as JSON, for the dashboard.

Per pipeline: its state (``live``, ``catching-up`` or ``stopped``), the workers running
it, lag, events applied, throughput, watermarks, time since its last batch and dead
letters; per source: snapshot progress, position and replication-slot lag. Read from
the database at request time (:mod:`headwater.engine.status`).

Errors: the database away → 503 (StorageError).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Literal

from fastapi import APIRouter

from headwater.engine.runtime import Runtime
from headwater.engine.status import (
    PipelineStatus,
    pipeline_statuses,
    source_statuses,
    worker_counts,
)

State = Literal["live", "catching-up", "stopped"]


class Throughput:
    """Events per second per pipeline, from the event counters this server has seen.

    Keeps the samples of the last ``window_s`` seconds; a pipeline's rate is its counter
    growth from the oldest kept sample to now. None until samples span ``min_span_s``
    (the first request has nothing to compare with). Thread-safe.
    """

    def __init__(self, window_s: float = 60.0, min_span_s: float = 1.0) -> None:
        self.window_s = window_s
        self.min_span_s = min_span_s
        self._samples: deque[tuple[float, dict[str, int]]] = deque()
        self._lock = threading.Lock()

    def observe(self, now: float, events: Mapping[str, int]) -> dict[str, float | None]:
        """Record ``events`` (counter per pipeline) seen at ``now`` (monotonic seconds);
        the rate per pipeline over the kept window."""
        with self._lock:
            while len(self._samples) > 1 and now - self._samples[1][0] >= self.window_s:
                self._samples.popleft()
            rates: dict[str, float | None] = {}
            for name, count in events.items():
                base = next((s for s in self._samples if name in s[1]), None)
                span = now - base[0] if base else 0.0
                rates[name] = (
                    max(count - base[1][name], 0) / span
                    if base and span >= self.min_span_s
                    else None
                )
            self._samples.append((now, dict(events)))
            return rates


def state_of(status: PipelineStatus, workers: int) -> State:
    """``stopped`` without a worker, ``catching-up`` with input left to apply, else
    ``live``."""
    if workers == 0:
        return "stopped"
    return "catching-up" if status.lag > 0 else "live"


def pipelines_router(rt: Runtime) -> APIRouter:
    """The status route (mount with the ``admin`` scope: it describes the deployment)."""
    router = APIRouter(prefix="/v1", tags=["operations"])
    meter = Throughput()

    @router.get("/pipelines")
    def pipelines() -> dict[str, Any]:
        """``{"at", "sources": [...], "pipelines": [{name, processor, input, state,
        workers, lag, events, throughput_eps, last_batch_at, last_batch_age_s,
        watermark, dead_letters, dlq_topic, partitions}]}``."""
        statuses = pipeline_statuses(rt)
        workers = worker_counts(rt)
        sources = source_statuses(rt)
        now = dt.datetime.now(dt.UTC)
        rates = meter.observe(time.monotonic(), {s.name: s.events for s in statuses})
        out = []
        for s in statuses:
            n = workers.get(s.name, 0)
            age = (now - s.last_batch_at).total_seconds() if s.last_batch_at else None
            out.append(
                {
                    **s.to_json(),
                    "state": state_of(s, n),
                    "workers": n,
                    "throughput_eps": rates.get(s.name),
                    "last_batch_age_s": None if age is None else max(age, 0.0),
                }
            )
        return {
            "at": now.isoformat(),
            "sources": [{**x.to_json(), "snapshot": x.snapshot_text()} for x in sources],
            "pipelines": out,
        }

    return router
