"""What ``headwater status`` and ``/metrics`` report: lag, watermarks, dead letters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from headwater.engine.runtime import Runtime
from headwater.errors import TopicNotFound
from headwater.log.base import dlq_topic
from headwater.storage.database import connect


@dataclass(frozen=True)
class PartitionStatus:
    partition: int
    committed: int
    end: int
    lag: int
    position: str | None
    events: int
    dead_letters: int


@dataclass(frozen=True)
class PipelineStatus:
    name: str
    processor: str
    input: str
    lag: int
    events: int
    dead_letters: int
    dlq_topic: str
    last_batch_at: datetime | None
    watermark: dict[int, str | None] = field(default_factory=dict)
    partitions: list[PartitionStatus] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["last_batch_at"] = self.last_batch_at.isoformat() if self.last_batch_at else None
        d["watermark"] = {str(k): v for k, v in self.watermark.items()}
        return d


def pipeline_statuses(rt: Runtime) -> list[PipelineStatus]:
    """One entry per configured pipeline."""
    out = []
    with connect(rt.dsn, autocommit=True) as conn:
        for p in rt.settings.all_pipelines():
            try:
                ends = {i.partition: i.end_offset for i in rt.log.partitions(p.input)}
            except TopicNotFound:
                ends = {}
            rows = conn.execute(
                "SELECT o.partition, o.next_offset, o.position,"
                " coalesce(s.events, 0), coalesce(s.dead_letters, 0), s.last_batch_at"
                " FROM headwater.consumer_offsets o LEFT JOIN headwater.pipeline_stats s"
                " ON s.pipeline = o.group_name AND s.partition = o.partition"
                " WHERE o.group_name = %s AND o.topic = %s",
                (p.name, p.input),
            ).fetchall()
            by_part = {r[0]: r for r in rows}
            parts = []
            last: datetime | None = None
            for part in sorted(set(ends) | set(by_part)):
                _, committed, pos, events, dead, at = by_part.get(part, (part, 0, None, 0, 0, None))
                end = ends.get(part, committed)
                parts.append(
                    PartitionStatus(
                        part, committed, end, max(end - committed, 0), pos, events, dead
                    )
                )
                if at is not None and (last is None or at > last):
                    last = at
            out.append(
                PipelineStatus(
                    name=p.name,
                    processor=p.processor,
                    input=p.input,
                    lag=sum(x.lag for x in parts),
                    events=sum(x.events for x in parts),
                    dead_letters=_count(rt, dlq_topic(p.name)),
                    dlq_topic=dlq_topic(p.name),
                    last_batch_at=last,
                    watermark={x.partition: x.position for x in parts},
                    partitions=parts,
                )
            )
    return out


def _count(rt: Runtime, topic: str) -> int:
    try:
        return sum(i.end_offset - i.start_offset for i in rt.log.partitions(topic))
    except TopicNotFound:
        return 0


@dataclass(frozen=True)
class SourceStatus:
    name: str
    kind: str
    tables: list[str]
    snapshot_done: bool | None
    position: str | None
    lag_bytes: int | None
    """PostgreSQL: WAL the replication slot holds back (unconfirmed); None if unknown."""
    error: str | None = None
    snapshot_rows: int = 0
    """Rows the initial snapshot has read so far (all tables)."""
    snapshot_estimate: int | None = None
    """The captured tables' estimated row count (PostgreSQL statistics); None: unknown."""

    def snapshot_text(self) -> str:
        """``done``, ``running 24% (120,000 rows)``, ``running (120,000 rows)`` or ``-``."""
        if self.snapshot_done is None:
            return "-"
        if self.snapshot_done:
            return "done"
        pct = ""
        if self.snapshot_estimate:
            pct = f"{min(0.99, self.snapshot_rows / self.snapshot_estimate):.0%} "
        return f"running {pct}({self.snapshot_rows:,} rows)"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def source_statuses(rt: Runtime) -> list[SourceStatus]:
    """One entry per configured source: where it is and how far behind."""
    out = []
    with connect(rt.dsn, autocommit=True) as conn:
        for s in rt.settings.sources:
            done: bool | None = None
            pos: str | None = None
            rows, estimate = 0, None
            lag: int | None = None
            error: str | None = None
            if s.kind == "postgres":
                from headwater.sources.postgres.source import slot_lag_bytes, slot_name

                row = conn.execute(
                    "SELECT snapshot_done, position, snapshot_progress"
                    " FROM headwater.source_state WHERE source = %s",
                    (s.name,),
                ).fetchone()
                if row:
                    done, pos, prog = row
                    rows = sum(int(t.get("rows", 0)) for t in prog.values())
                    estimate = sum(int(t.get("estimate", 0)) for t in prog.values()) or None
                try:
                    with connect(
                        s.dsn.get_secret_value(), autocommit=True, connect_timeout=3
                    ) as src:
                        lag = slot_lag_bytes(src, slot_name(s.name))
                except Exception as exc:  # the source may be away: report, don't fail
                    error = str(exc).splitlines()[0]
            elif s.kind == "files":
                row = conn.execute(
                    "SELECT snapshot_done, position FROM headwater.source_state WHERE source = %s",
                    (s.name,),
                ).fetchone()
                if row:
                    done, pos = row
                out.append(SourceStatus(s.name, s.kind, [str(s.path)], done, pos, None, None))
                continue
            else:
                row = conn.execute(
                    "SELECT snapshot_done, binlog_file || ':' || binlog_pos"
                    " FROM headwater.mysql_source_state WHERE source = %s",
                    (s.name,),
                ).fetchone()
                if row:
                    done, pos = row
                    got = conn.execute(
                        "SELECT coalesce(sum(rows_read), 0)::int8"
                        " FROM headwater.mysql_snapshot_progress WHERE source = %s",
                        (s.name,),
                    ).fetchone()
                    rows = int(got[0]) if got else 0
            out.append(
                SourceStatus(s.name, s.kind, list(s.tables), done, pos, lag, error, rows, estimate)
            )
    return out


def worker_counts(rt: Runtime) -> dict[str, int]:
    """Per configured pipeline, how many workers hold a session on Headwater's database
    now (``pg_stat_activity``, by the workers' application name); 0: none is running."""
    names = {f"headwater-worker:{p.name}"[:63]: p.name for p in rt.settings.all_pipelines()}
    with connect(rt.dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name, count(*)::int FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = ANY(%s) GROUP BY 1",
            (list(names),),
        ).fetchall()
    found = {names[app]: n for app, n in rows}
    return {name: found.get(name, 0) for name in names.values()}
