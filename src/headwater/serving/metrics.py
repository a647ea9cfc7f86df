"""Prometheus metrics, read from the database at scrape time.

Workers keep their counters in PostgreSQL inside each batch's transaction, so the
figures are exact across processes, machines and crashes, and the server needs no
shared memory with the workers.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from headwater.engine.runtime import Runtime
from headwater.engine.status import pipeline_statuses, source_statuses


class PipelineCollector(Collector):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "headwater_pipeline_events",
            "Records applied by a pipeline",
            labels=["pipeline", "partition"],
        )
        lag = GaugeMetricFamily(
            "headwater_pipeline_lag_records",
            "Records in the input not yet applied",
            labels=["pipeline", "partition"],
        )
        dlq = GaugeMetricFamily(
            "headwater_pipeline_dead_letters",
            "Records in the pipeline's dead-letter topic",
            labels=["pipeline"],
        )
        last = GaugeMetricFamily(
            "headwater_pipeline_last_batch_timestamp_seconds",
            "When the pipeline last committed a batch",
            labels=["pipeline"],
        )
        for st in pipeline_statuses(self.rt):
            for p in st.partitions:
                events.add_metric([st.name, str(p.partition)], p.events)
                lag.add_metric([st.name, str(p.partition)], p.lag)
            dlq.add_metric([st.name], st.dead_letters)
            if st.last_batch_at is not None:
                last.add_metric([st.name], st.last_batch_at.timestamp())
        slot_lag = GaugeMetricFamily(
            "headwater_source_slot_lag_bytes",
            "WAL a PostgreSQL source's replication slot retains beyond its confirmed position",
            labels=["source"],
        )
        for src in source_statuses(self.rt):
            if src.lag_bytes is not None:
                slot_lag.add_metric([src.name], src.lag_bytes)
        yield from (events, lag, dlq, last, slot_lag)
