"""Offline evaluation: the incremental graph's matcher on a batch of records.

    >>> from headwater.profiles.batch import resolve
    >>> res = resolve(cfg, records)            # estimates m/u unless model= is given
    >>> res.clusters                           # [frozenset({"crm:customers:1", ...}), ...]
    >>> res.pairs()                            # {("a", "b"), ...} every pair in a cluster

Persons are the connected components of the same links the incremental graph keeps
(shared identifiers, or a blocked pair at or above the threshold), so running this on
the records a graph holds gives the graph's persons.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from headwater.config.profiles import ProfilesConfig
from headwater.profiles.matcher import FSModel, MatchRecord, estimate, iter_links


@dataclass(frozen=True)
class Link:
    a: str
    b: str
    score: float
    evidence: dict[str, object]


@dataclass(frozen=True)
class Resolution:
    """Persons (clusters of record ids), the links that made them and the model used."""

    clusters: list[frozenset[str]]
    links: list[Link]
    model: FSModel

    def pairs(self) -> set[tuple[str, str]]:
        """Every unordered pair ``(a, b)``, ``a < b``, of records in one cluster."""
        out: set[tuple[str, str]] = set()
        for c in self.clusters:
            ids = sorted(c)
            for i in range(len(ids)):
                for j in range(i + 1, len(ids)):
                    out.add((ids[i], ids[j]))
        return out


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def resolve(
    cfg: ProfilesConfig, records: Sequence[MatchRecord], *, model: FSModel | None = None
) -> Resolution:
    """Cluster ``records`` into persons.

    Args:
        cfg: the ``[profiles]`` configuration (blocking, comparisons, threshold).
        records: normalized records; ``record_id`` must be unique.
        model: Fellegi-Sunter parameters; default: estimated from ``records``.

    Raises:
        ValueError: duplicate record ids.
    """
    ids = [r.record_id for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("record ids must be unique")
    fs = model if model is not None else estimate(cfg, records)
    uf = _UnionFind(len(records))
    links: list[Link] = []
    by_ident: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        for ident in r.identifiers:
            by_ident[ident].append(i)
    for (kind, value), members in sorted(by_ident.items()):
        for j in members[1:]:
            uf.union(members[0], j)
            links.append(Link(ids[members[0]], ids[j], 1.0, {kind: value}))
    for i, j, p, ev in iter_links(cfg, fs, records):
        uf.union(i, j)
        links.append(Link(ids[i], ids[j], p, dict(ev)))
    groups: dict[int, set[str]] = defaultdict(set)
    for i, rid in enumerate(ids):
        groups[uf.find(i)].add(rid)
    clusters = sorted((frozenset(g) for g in groups.values()), key=lambda c: min(c))
    return Resolution(clusters, links, fs)
