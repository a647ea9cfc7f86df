"""Watermarks (``as_of``) and read-your-writes (``consistency: "fresh"``).

A pipeline's watermark is, per partition of its input topic, the source position of
the last record it applied (engine/status.py). Positions compare as numbers
(:func:`~headwater.sinks.replica.position_key`: LSN ``X/Y`` as a 64-bit integer, binlog
``file:pos`` by file index then offset), never as strings (``0/9`` > ``0/10`` as text).

:func:`wait_fresh` — protocol, per source feeding the pipelines an answer depends on:

1. Read the source's current position P: ``pg_current_wal_lsn()`` on PostgreSQL,
   ``SHOW MASTER STATUS`` on MySQL/MariaDB. Every write the caller committed before
   asking is at or below P.
2. Wait until the source has made everything up to P durable in the log: on PostgreSQL
   the slot's ``confirmed_flush_lsn`` (confirmed only after the append; it also moves
   past WAL of other tables and databases on keepalives, which the source reports every
   few seconds — so after unrelated WAL the wait can take that long) or the stored
   position reaches P; on MySQL the stored binlog position (heartbeats move it) reaches
   P. A files source has no single position: it is there when its manifest (written in
   the append's transaction) matches the folder as it is now.
3. At that moment read the end offsets E of the source's topics. Each dependent
   pipeline is caught up when every partition either has applied up to E (committed
   offset ≥ E: an idle partition with nothing pending counts as caught up, whatever its
   last position) or has a watermark ≥ P.

Pipelines fed by no configured source (an application topic) are caught up when every
partition has applied everything appended before the request started. If the deadline
passes first, the answer is given anyway, marked ``stale: true``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headwater.config.model import PipelineConfig, Settings
from headwater.errors import TopicNotFound
from headwater.log.base import Conn, Log
from headwater.sinks.replica import position_key


@dataclass(frozen=True)
class Progress:
    """One pipeline: per partition (committed offset, end offset, watermark position)."""

    name: str
    topic: str
    partitions: Mapping[int, tuple[int, int, str | None]]

    def as_of(self) -> str | None:
        """The position up to which this pipeline has applied what it received: the
        lowest watermark among partitions with pending records, else the highest."""
        pending = [p for c, e, p in self.partitions.values() if c < e and p]
        done = [p for c, e, p in self.partitions.values() if c >= e and p]
        pick = min if pending else max
        cand = pending or done
        try:
            return pick(cand, key=lambda p: position_key(p) or 0) if cand else None
        except ValueError:  # positions of an unknown form: report one as it is
            return cand[0]


def dependent_pipelines(settings: Settings) -> list[PipelineConfig]:
    """``serving.depends_on``, or every pipeline when it is empty."""
    wanted = set(settings.serving.depends_on)
    return [p for p in settings.all_pipelines() if not wanted or p.name in wanted]


def progress(conn: Conn, log: Log, pipelines: Sequence[PipelineConfig]) -> dict[str, Progress]:
    """Committed offsets, end offsets and watermarks of ``pipelines`` (one query)."""
    if not pipelines:
        return {}
    rows = conn.execute(
        "SELECT group_name, topic, partition, next_offset, position"
        " FROM headwater.consumer_offsets WHERE group_name = ANY(%s)",
        ([p.name for p in pipelines],),
    ).fetchall()
    committed: dict[tuple[str, str], dict[int, tuple[int, str | None]]] = {}
    for g, t, part, off, pos in rows:
        committed.setdefault((g, t), {})[part] = (int(off), pos)
    ends = end_offsets(conn, log, sorted({p.input for p in pipelines}))
    out = {}
    for p in pipelines:
        mine = committed.get((p.name, p.input), {})
        parts = {
            part: (mine.get(part, (0, None))[0], end, mine.get(part, (0, None))[1])
            for part, end in ends.get(p.input, {}).items()
        }
        out[p.name] = Progress(p.name, p.input, parts)
    return out


def end_offsets(conn: Conn, log: Log, topics: Sequence[str]) -> dict[str, dict[int, int]]:
    """Per topic, per partition: the next offset to be written (committed appends)."""
    out: dict[str, dict[int, int]] = {t: {} for t in topics}
    if log.backend == "postgres":  # on the caller's connection: safe from any thread
        for t, part, end in conn.execute(
            "SELECT t.name, p.partition, p.next_offset FROM headwater.topics t"
            " JOIN headwater.log_partitions p ON p.topic_id = t.id WHERE t.name = ANY(%s)",
            (list(topics),),
        ).fetchall():
            out[t][int(part)] = int(end)
        return out
    for t in topics:
        with contextlib.suppress(TopicNotFound):
            out[t] = {i.partition: i.end_offset for i in log.partitions(t)}
    return out


def as_of(progresses: Mapping[str, Progress]) -> dict[str, str | None]:
    return {name: pr.as_of() for name, pr in progresses.items()}


def source_of(settings: Settings, topic: str) -> Any:
    """The configured source that writes ``topic`` (a CDC or a files source), or None."""
    for s in settings.sources:
        src: Any = s
        if src.kind == "files":
            if src.topic == topic:
                return src
        elif any(src.topic_of(sc, t) == topic for sc, t in src.table_refs()):
            return src
    return None


# -- source positions -------------------------------------------------------------------


class _SourceProbe:
    """A CDC source: its current position (the target, read once) and whether
    Headwater has made everything up to it durable in the log."""

    def __init__(self, src: Any, state: Conn) -> None:
        self.src = src
        self.state = state
        self._conn: Any = None
        self.target: int | None = self.current()

    def reached(self) -> bool:
        return self.durable() >= (self.target or 0)

    def _connection(self) -> Any:
        if self._conn is None:
            if self.src.kind == "postgres":
                from headwater.storage.database import connect

                self._conn = connect(
                    self.src.dsn.get_secret_value(), autocommit=True, connect_timeout=3
                )
            else:
                import pymysql  # type: ignore[import-untyped]

                from headwater.errors import SourceError
                from headwater.sources.mysql.settings import MySQLSettings

                settings = MySQLSettings.from_dsn(self.src.dsn.get_secret_value())
                try:
                    self._conn = pymysql.connect(autocommit=True, **settings.pymysql_kwargs())
                except pymysql.err.MySQLError as exc:
                    raise SourceError(
                        f"sources.{self.src.name}: cannot read the current position at"
                        f" {settings.describe()}: {exc.args[-1] if exc.args else exc}"
                    ) from None
        return self._conn

    def current(self) -> int:
        c = self._connection()
        if self.src.kind == "postgres":
            row = c.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            return int(position_key(row[0]) or 0)
        from headwater.sources.mysql.checks import current_position

        pos = current_position(c)
        return int(position_key(f"{pos.file}:{pos.pos}") or 0)

    def durable(self) -> int:
        """How far the log holds the source (0 while its first snapshot runs: the
        slot's or binlog's position then says nothing of the rows still to copy)."""
        if self.src.kind == "postgres":
            from headwater.sources.postgres.source import slot_name

            row = self.state.execute(
                "SELECT snapshot_done, position FROM headwater.source_state WHERE source = %s",
                (self.src.name,),
            ).fetchone()
            if row is None or not row[0]:
                return 0
            stored = position_key(row[1]) if row[1] else 0
            slot = (
                self._connection()
                .execute(
                    "SELECT confirmed_flush_lsn::text FROM pg_replication_slots"
                    " WHERE slot_name = %s",
                    (slot_name(self.src.name),),
                )
                .fetchone()
            )
            confirmed = position_key(slot[0]) if slot and slot[0] else 0
            return max(int(stored or 0), int(confirmed or 0))
        row = self.state.execute(
            "SELECT snapshot_done, binlog_file || ':' || binlog_pos"
            " FROM headwater.mysql_source_state WHERE source = %s",
            (self.src.name,),
        ).fetchone()
        if row is None or not row[0] or not row[1]:
            return 0
        return int(position_key(row[1]) or 0)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class _FilesProbe:
    """A files source: reached when its manifest (what it has made durable in the log,
    written in the append's transaction) matches the folder as it is now. A file whose
    size or mtime differ is hashed; same bytes (a touch) count as published."""

    target: int | None = None

    def __init__(self, src: Any, state: Conn) -> None:
        self.src = src
        self.state = state
        self.root = Path(src.path).expanduser().resolve()

    def reached(self) -> bool:
        from headwater.sources.files.globs import selected

        manifest = {
            str(r[0]): (str(r[1]), int(r[2]), int(r[3]))
            for r in self.state.execute(
                "SELECT path, content_hash, size, mtime_ns FROM headwater_kb.file_manifest"
                " WHERE source = %s",
                (self.src.name,),
            ).fetchall()
        }
        seen: set[str] = set()
        for dirpath, _, filenames in os.walk(self.root):
            for fn in filenames:
                path = Path(dirpath, fn)
                rel = path.relative_to(self.root).as_posix()
                if not selected(rel, self.src.include, self.src.exclude):
                    continue
                seen.add(rel)
                known = manifest.get(rel)
                try:
                    st = path.stat()
                except OSError:
                    continue  # vanished while we looked: its deletion is checked below
                if known is None:
                    return False
                if (known[1], known[2]) == (st.st_size, st.st_mtime_ns):
                    continue
                try:
                    if hashlib.sha256(path.read_bytes()).hexdigest() != known[0]:
                        return False
                except OSError:
                    return False
        return not (set(manifest) - seen)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Freshness:
    caught_up: bool
    waited_ms: float
    targets: Mapping[str, int | None]
    """Per source: the position waited for (as a number; None for a files source)."""


def wait_fresh(
    settings: Settings,
    conn: Conn,
    log: Log,
    pipelines: Sequence[PipelineConfig],
    *,
    timeout_s: float,
    poll_s: float = 0.05,
) -> Freshness:
    """Wait (at most ``timeout_s``) until ``pipelines`` reflect every write committed at
    their sources before the call. See the module docstring for the protocol.

    Raises:
        StorageError / SourceError: a source cannot be reached (not a staleness).
    """
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    by_source: dict[str, list[PipelineConfig]] = {}
    unsourced: list[PipelineConfig] = []
    sources: dict[str, Any] = {}
    for p in pipelines:
        s = source_of(settings, p.input)
        if s is None:
            unsourced.append(p)
        else:
            by_source.setdefault(s.name, []).append(p)
            sources[s.name] = s
    probes: dict[str, _SourceProbe | _FilesProbe] = {}
    try:
        for name, s in sources.items():
            probes[name] = _FilesProbe(s, conn) if s.kind == "files" else _SourceProbe(s, conn)
        targets = {name: pr.target for name, pr in probes.items()}
        # Pipelines without a source: what was appended before now must be applied.
        required: dict[str, dict[int, int]] = {
            p.name: {part: end for part, (_, end, _) in pr.partitions.items()}
            for p in unsourced
            for pr in [progress(conn, log, [p])[p.name]]
        }
        waiting_sources = set(targets)
        while True:
            for name in sorted(waiting_sources):
                if probes[name].reached():
                    waiting_sources.discard(name)
                    for p in by_source[name]:
                        pr = progress(conn, log, [p])[p.name]
                        required[p.name] = {
                            part: end for part, (_, end, _) in pr.partitions.items()
                        }
            if not waiting_sources:
                done = True
                current = progress(conn, log, list(pipelines))
                for p in pipelines:
                    src = source_of(settings, p.input)
                    target = targets[src.name] if src is not None else None
                    ok = _caught_up(current[p.name], required.get(p.name, {}), target)
                    done = done and ok
                if done:
                    return Freshness(True, (time.monotonic() - t0) * 1000, targets)
            if time.monotonic() >= deadline:
                return Freshness(False, (time.monotonic() - t0) * 1000, targets)
            time.sleep(poll_s)
    finally:
        for probe in probes.values():
            probe.close()


def _caught_up(pr: Progress, required: Mapping[int, int], target: int | None) -> bool:
    for part, (committed, _end, pos) in pr.partitions.items():
        if committed >= required.get(part, 0):
            continue
        if target is not None and pos is not None:
            try:
                if (position_key(pos) or 0) >= target:
                    continue
            except ValueError:
                pass
        return False
    return True
