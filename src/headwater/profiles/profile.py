"""A person's profile from its records and facts: survivorship, identifiers, aggregates.

The profile (JSON) is a pure function of the person's records, facts and aliases, so
the incremental graph and a batch recompute build the same document::

    {"person_id": "p000042",
     "attributes": {"surname": {"value": "Smith", "source": "crm:customers:42"}, ...},
     "identifiers": [{"kind": "email", "value": "a@b.c", "sources": ["crm:customers:42"]}],
     "records": ["crm:customers:42", "res:guests:7"],            # lineage
     "facts": {"bookings": {"count": 3, "amount": 1250.0, "first": "2025-01-02",
                            "last": "2027-03-01", "upcoming": [{"id": "...", "date": "..."}]}},
     "aliases": ["p000017"]}

Survivorship per attribute, over the records with a non-empty value:
``trusted`` takes the highest table trust, then the most recent source commit
(``ts_ms``), then the greatest record id; ``recent`` takes the most recent first.
``upcoming`` lists the (at most 10) facts dated today or later when the profile was
built; readers drop those that have passed since (:func:`headwater.profiles.store.get_profile`).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from headwater.profiles.normalize import normalize_attribute

UPCOMING_MAX = 10


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A mapped source row as the graph keeps it (raw attribute values)."""

    record_id: str
    trust: int
    ts_ms: int | None
    attributes: Mapping[str, Any]
    identifiers: frozenset[tuple[str, str]] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Fact:
    fact_id: str
    name: str
    date: str | None
    amount: float | None


def build_profile(
    person_id: str,
    records: Iterable[SourceRecord],
    facts: Iterable[Fact],
    aliases: Iterable[str] = (),
    *,
    survivorship: Literal["trusted", "recent"] = "trusted",
    today: str | None = None,
) -> dict[str, Any]:
    """The profile document of one person (see the module docstring)."""
    recs = sorted(records, key=lambda r: r.record_id)
    best: dict[str, tuple[tuple[int, int, str], Any, str]] = {}
    for r in recs:
        ts = r.ts_ms if r.ts_ms is not None else -1
        rank = (
            (r.trust, ts, r.record_id) if survivorship == "trusted" else (ts, r.trust, r.record_id)
        )
        for name, value in r.attributes.items():
            if normalize_attribute(value) is None:
                continue
            if name not in best or rank > best[name][0]:
                best[name] = (rank, value, r.record_id)
    idents: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in recs:
        for ident in sorted(r.identifiers):
            idents[ident].append(r.record_id)
    today = today or dt.date.today().isoformat()
    by_name: dict[str, list[Fact]] = defaultdict(list)
    for f in facts:
        by_name[f.name].append(f)
    aggregates: dict[str, Any] = {}
    for name, fs in sorted(by_name.items()):
        dates = sorted(f.date for f in fs if f.date)
        amounts = [f.amount for f in fs if f.amount is not None]
        upcoming = sorted((f.date, f.fact_id) for f in fs if f.date and f.date[:10] >= today)
        aggregates[name] = {
            "count": len(fs),
            "amount": round(sum(amounts), 2) if amounts else None,
            "first": dates[0] if dates else None,
            "last": dates[-1] if dates else None,
            "upcoming": [{"id": i, "date": d} for d, i in upcoming[:UPCOMING_MAX]],
        }
    return {
        "person_id": person_id,
        "attributes": {n: {"value": v, "source": src} for n, (_, v, src) in sorted(best.items())},
        "identifiers": [
            {"kind": k, "value": v, "sources": s} for (k, v), s in sorted(idents.items())
        ],
        "records": [r.record_id for r in recs],
        "facts": aggregates,
        "aliases": sorted(aliases),
    }
