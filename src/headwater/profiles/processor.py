"""The ``profiles`` processor: CDC envelopes of mapped tables → identity graph → profiles.

One derived pipeline per topic of a ``[profiles]`` table (``profiles-<topic>``). A
person can span topics, and each pipeline is its own consumer group, so every batch
first takes one transaction-scoped advisory lock (:data:`GRAPH_LOCK`): graph updates
are serialised across all profiles pipelines and workers, each batch sees the graph
as the previous one committed it, and its effects commit (or roll back) with its own
offsets. Deadlock-free: a worker holds only its own topic's offset rows before
taking the lock, and no other lock is taken while waiting. The price is that graph
updates do not run in parallel — one batch applies many changes at once instead.
(Alternative considered: one pipeline reading several topics; the worker reads one
topic, and the lock keeps each topic's offsets and watermark where they are.)

Per batch: records are parsed into the net change per source row (the last one per
key wins; keys never span partitions), then :func:`headwater.profiles.graph.apply`.
The batch's position (the highest of its records') becomes the ``as_of`` of that
topic on every profile the batch touched.

Delivery: exactly-once — all writes are on the worker's connection, inside the
batch's transaction; nothing is kept in memory between batches. A record that is
not a change event, or lacks its key, raises :class:`ProcessingError` and is
dead-lettered by the worker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from headwater.config.profiles import FactTable, MappedTable, ProfilesConfig
from headwater.engine.processor import Processor
from headwater.errors import ProcessingError
from headwater.log.base import Conn, LogRecord
from headwater.profiles import graph
from headwater.profiles.matcher import FSModel, default_model
from headwater.profiles.normalize import normalize_identifier
from headwater.sinks.replica import position_key

log = logging.getLogger(__name__)

GRAPH_LOCK = 0x6877_7072_6F66  # "hwprof": serialises every identity-graph update


def load_model(conn: Conn, cfg: ProfilesConfig, *, lock: bool = False) -> FSModel:
    """The stored Fellegi-Sunter parameters, or the defaults when none (or stale ones,
    for other comparisons than configured) are stored. ``lock``: take
    :data:`GRAPH_LOCK` first (same round trip)."""
    row = conn.execute(
        "SELECT " + ("pg_advisory_xact_lock(%s), " if lock else "%s, ") + "(SELECT params"
        " FROM headwater_profiles.model)",
        (GRAPH_LOCK,),
    ).fetchone()
    default = default_model(cfg)
    if row is None or row[1] is None:
        return default
    model = FSModel.from_json(row[1])
    if [n for n, _ in model.comparisons] != [n for n, _ in default.comparisons]:
        log.warning("stored profiles model compares other attributes; using defaults")
        return default
    return model


def store_model(conn: Conn, model: FSModel) -> None:
    """Store the parameters later batches score with (links already made stay)."""
    from psycopg.types.json import Jsonb

    conn.execute(
        "INSERT INTO headwater_profiles.model (id, params) VALUES (1, %s)"
        " ON CONFLICT (id) DO UPDATE SET params = excluded.params, trained_at = now()",
        (Jsonb(model.to_json()),),
    )


def _key_string(key: Any) -> str:
    if isinstance(key, dict) and key:
        return ",".join(str(v) for v in key.values())
    raise ProcessingError("change event without a primary key")


class ProfilesProcessor(Processor):
    """Maintains the identity graph and profiles from one topic's change events."""

    def __init__(self, cfg: ProfilesConfig, topic: str) -> None:
        self.cfg = cfg
        self.topic = topic
        self.tables = [t for t in cfg.tables if t.topic == topic]
        self.facts = [f for f in cfg.facts if f.topic == topic]
        if not self.tables and not self.facts:
            raise ProcessingError(f"no [profiles] table is captured on topic {topic!r}")

    def process(self, conn: Conn, records: Sequence[LogRecord]) -> None:
        model = load_model(conn, self.cfg, lock=True)
        changes: dict[str, graph.RecordChange] = {}
        facts: dict[str, graph.FactChange] = {}
        best: tuple[int, str] | None = None
        truncated: list[int] = []
        for r in records:
            ev = self._event(r)
            if ev is None:
                continue
            pos = self._position(r, ev)
            pk = position_key(pos) if pos is not None else None
            if pk is not None and (best is None or pk >= best[0]):
                best = (pk, str(pos))
            if ev.get("op") == "t":
                truncated.append(pk or 0)
                continue
            for t in self.tables:
                c = self._record_change(t, r, ev, pos)
                changes[c.record_id] = c
            for f in self.facts:
                fc = self._fact_change(f, r, ev, pos)
                facts[fc.fact_id] = fc
        if truncated:
            for t in self.tables:
                rows = conn.execute(
                    "SELECT record_id FROM headwater_profiles.records WHERE tbl = %s"
                    " AND topic = %s AND coalesce(position_key, 0) < %s",
                    (t.name, self.topic, max(truncated)),
                ).fetchall()
                for (rid,) in rows:
                    changes.setdefault(rid, graph.RecordChange(rid, t.name, t.trust, None))
        graph.apply(
            conn,
            self.cfg,
            model,
            self.topic,
            list(changes.values()),
            list(facts.values()),
            best[1] if best else None,
        )

    # -- parsing ------------------------------------------------------------------------

    @staticmethod
    def _event(r: LogRecord) -> dict[str, Any] | None:
        if r.value is None:
            return None  # tombstone
        try:
            ev = json.loads(r.value)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProcessingError(f"value is not JSON: {exc}") from None
        if not isinstance(ev, dict) or ev.get("op") not in ("r", "c", "u", "d", "t"):
            raise ProcessingError("value is not a change event (op r, c, u, d or t)")
        return ev

    @staticmethod
    def _position(r: LogRecord, ev: dict[str, Any]) -> str | None:
        pos = r.headers.get("position")
        src = ev.get("source") if isinstance(ev.get("source"), dict) else {}
        if pos is None and src:
            if "lsn" in src:
                pos = str(src["lsn"])
            elif "file" in src and "pos" in src:
                pos = f"{src['file']}:{src['pos']}"
        return pos

    @staticmethod
    def _row_and_key(r: LogRecord, ev: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        key: Any = None
        if r.key is not None:
            try:
                key = json.loads(r.key)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise ProcessingError("key is not JSON") from None
        if ev["op"] == "d":
            return None, _key_string(key if key is not None else ev.get("before"))
        after = ev.get("after")
        if not isinstance(after, dict):
            raise ProcessingError(f"op {ev['op']!r} without an 'after' row")
        return after, _key_string(key)

    def _record_change(
        self, t: MappedTable, r: LogRecord, ev: dict[str, Any], pos: str | None
    ) -> graph.RecordChange:
        row, key = self._row_and_key(r, ev)
        rid = f"{t.name}:{key}"
        if row is None:
            return graph.RecordChange(rid, t.name, t.trust, None, position=pos)
        idents = set()
        for col, kind in t.identifiers.items():
            v = normalize_identifier(kind, row.get(col), self.cfg.default_region)
            if v is not None:
                idents.add((kind, v))
        src = ev.get("source")
        ts = src.get("ts_ms", ev.get("ts_ms")) if isinstance(src, dict) else ev.get("ts_ms")
        return graph.RecordChange(
            rid,
            t.name,
            t.trust,
            {name: row.get(col) for col, name in t.attributes.items()},
            frozenset(idents),
            pos,
            int(ts) if isinstance(ts, int | float) else None,
        )

    def _fact_change(
        self, f: FactTable, r: LogRecord, ev: dict[str, Any], pos: str | None
    ) -> graph.FactChange:
        row, key = self._row_and_key(r, ev)
        fid = f"{f.source}:{f.table.rsplit('.', 1)[-1]}:{key}"
        if row is None:
            return graph.FactChange(fid, None, position=pos)
        link = row.get(f.link_column)
        link_record = link_ident = None
        if link is not None and f.link_table is not None:
            link_record = f"{f.link_table.replace('.', ':', 1)}:{link}"
        elif link is not None and f.link_identifier is not None:
            v = normalize_identifier(f.link_identifier, link, self.cfg.default_region)
            link_ident = (f.link_identifier, v) if v is not None else None
        date = row.get(f.date_column) if f.date_column else None
        amount = row.get(f.amount_column) if f.amount_column else None
        try:
            amt = float(amount) if amount is not None else None
        except (TypeError, ValueError):
            raise ProcessingError(f"{f.amount_column}: {amount!r} is not a number") from None
        return graph.FactChange(
            fid, f.name, link_record, link_ident, str(date) if date is not None else None, amt, pos
        )
