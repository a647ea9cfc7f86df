"""Record matching: deterministic identifiers plus Fellegi-Sunter on attributes.

Two records are linked when

- they share a normalized identifier (same kind and value), or
- their Fellegi-Sunter match probability reaches ``[profiles].threshold``.

Fellegi-Sunter: each configured comparison puts a pair at a level (null, exact, one
level per similarity threshold, else); level ``l`` of comparison ``c`` has
``m[c][l] = P(level | match)`` and ``u[c][l] = P(level | non-match)``. The match weight
is ``log2(prior / (1 - prior)) + Σ log2(m / u)`` (a null level weighs 0).

Parameters are estimated from the data as Splink does (:func:`estimate`): ``u`` from
random pairs, ``m`` by expectation-maximisation over the pairs of each blocking rule
(a rule's own attributes are not estimated from its pairs — they agree by
construction), and the prior from the blocked pairs' share of matches.

Only pairs sharing a blocking key are scored (:func:`blocking_keys`), so work grows with
the block sizes, not with n². The score of a pair depends on the two records and the
parameters only, which is what lets the incremental graph and a batch recompute agree.
"""

from __future__ import annotations

import functools
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rapidfuzz import fuzz
from rapidfuzz.distance import JaroWinkler, Levenshtein

from headwater.config.profiles import Comparison, ProfilesConfig
from headwater.profiles.normalize import normalize_attribute

_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class MatchRecord:
    """A record as the matcher sees it: normalized identifiers and attributes."""

    record_id: str
    identifiers: frozenset[tuple[str, str]] = frozenset()
    attributes: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def of(
        record_id: str,
        identifiers: Iterable[tuple[str, str]],
        attributes: Mapping[str, Any],
    ) -> MatchRecord:
        """A record from normalized identifiers and raw attribute values."""
        attrs = {k: v for k, v in ((k, normalize_attribute(v)) for k, v in attributes.items())}
        return MatchRecord(
            record_id,
            frozenset(identifiers),
            {k: v for k, v in attrs.items() if v is not None},
        )


@dataclass(frozen=True)
class FSModel:
    """Fellegi-Sunter parameters: per comparison, m and u per level (level 0 = null)."""

    comparisons: tuple[tuple[str, Comparison], ...]
    m: tuple[tuple[float, ...], ...]
    u: tuple[tuple[float, ...], ...]
    prior: float

    @functools.cached_property
    def weights(self) -> list[list[float]]:
        """log2(m/u) per comparison and level (0 for the null level)."""
        return [
            [0.0]
            + [math.log2(max(m, _EPS) / max(u, _EPS)) for m, u in zip(ms[1:], us[1:], strict=True)]
            for ms, us in zip(self.m, self.u, strict=True)
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "comparisons": [[n, c.model_dump()] for n, c in self.comparisons],
            "m": [list(x) for x in self.m],
            "u": [list(x) for x in self.u],
            "prior": self.prior,
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> FSModel:
        return FSModel(
            tuple((n, Comparison.model_validate(c)) for n, c in data["comparisons"]),
            tuple(tuple(x) for x in data["m"]),
            tuple(tuple(x) for x in data["u"]),
            float(data["prior"]),
        )


def comparisons(cfg: ProfilesConfig) -> tuple[tuple[str, Comparison], ...]:
    """The configured comparisons; without any, the default one for every attribute."""
    if cfg.comparisons:
        return tuple(sorted(cfg.comparisons.items()))
    attrs = sorted({a for t in cfg.tables for a in t.attributes.values()})
    return tuple((a, Comparison()) for a in attrs)


def default_model(cfg: ProfilesConfig) -> FSModel:
    """Parameters before any estimation: agreement is strong evidence, fuzzy weaker."""
    comps = comparisons(cfg)
    ms, us = [], []
    for _, c in comps:
        k = len(c.levels)
        ms.append((0.0, 0.85, *([0.1 / max(k, 1)] * k), 0.05))
        us.append((0.0, 0.01, *([0.02 / max(k, 1)] * k), 0.97))
    return FSModel(comps, tuple(ms), tuple(us), 1e-3)


# -- comparing --------------------------------------------------------------------------


def _similarity(method: str, a: str, b: str) -> float:
    if method == "jaro_winkler":
        return float(JaroWinkler.normalized_similarity(a, b))
    if method == "levenshtein":
        return float(Levenshtein.normalized_similarity(a, b))
    if method == "token_set":
        return float(fuzz.token_set_ratio(a, b)) / 100.0
    return 0.0


def level(comp: Comparison, a: str | None, b: str | None) -> int:
    """The comparison level of two values: 0 null, 1 exact, 2.. thresholds, last else."""
    if a is None or b is None:
        return 0
    if a == b:
        return 1
    if comp.method != "exact" and comp.levels:
        s = _similarity(comp.method, a, b)
        for i, t in enumerate(comp.levels):
            if s >= t:
                return 2 + i
    return 2 + len(comp.levels)


def levels(model: FSModel, a: MatchRecord, b: MatchRecord) -> list[int]:
    return [level(c, a.attributes.get(n), b.attributes.get(n)) for n, c in model.comparisons]


def score(model: FSModel, a: MatchRecord, b: MatchRecord) -> tuple[float, dict[str, int]]:
    """Match probability of two records and the level of each compared attribute."""
    lv = levels(model, a, b)
    w = math.log2(model.prior / (1 - model.prior))
    for weights, lvl in zip(model.weights, lv, strict=True):
        w += weights[lvl]
    w = max(min(w, 60.0), -60.0)
    p = 2.0**w / (1.0 + 2.0**w)
    return p, {n: lvl for (n, _), lvl in zip(model.comparisons, lv, strict=True) if lvl}


# -- blocking ---------------------------------------------------------------------------


def blocking_keys(cfg: ProfilesConfig, rec: MatchRecord) -> list[str]:
    """The record's key per blocking rule whose attributes it all has."""
    out = []
    for i, rule in enumerate(cfg.blocking):
        vals = [rec.attributes.get(a) for a in rule]
        if all(v is not None for v in vals):
            out.append(f"{i}:" + "\x1f".join(v for v in vals if v is not None))
    return out


def candidate_pairs(
    cfg: ProfilesConfig, records: Sequence[MatchRecord], rules: Sequence[int] | None = None
) -> set[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, sharing a blocking key (of ``rules``)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        for k in blocking_keys(cfg, r):
            if rules is None or int(k.split(":", 1)[0]) in rules:
                groups[k].append(i)
    out: set[tuple[int, int]] = set()
    for members in groups.values():
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                out.add((members[x], members[y]))
    return out


# -- estimation -------------------------------------------------------------------------


def _level_matrix(
    model: FSModel, records: Sequence[MatchRecord], pairs: Iterable[tuple[int, int]]
) -> np.ndarray:
    rows = [levels(model, records[i], records[j]) for i, j in pairs]
    return np.asarray(rows, dtype=np.int8).reshape(len(rows), len(model.comparisons))


def _em(
    lv: np.ndarray,
    m: list[np.ndarray],
    u: list[np.ndarray],
    lam: float,
    fixed: set[int],
    iterations: int = 25,
) -> tuple[list[np.ndarray], float]:
    """EM on level matrix ``lv`` with ``u`` fixed; comparisons in ``fixed`` keep ``m``."""
    m = [x.copy() for x in m]
    for _ in range(iterations):
        lm = np.full(len(lv), math.log(max(lam, _EPS)))
        lu = np.full(len(lv), math.log(max(1 - lam, _EPS)))
        for c in range(lv.shape[1]):
            lm += np.log(np.maximum(m[c], _EPS))[lv[:, c]] * (lv[:, c] > 0)
            lu += np.log(np.maximum(u[c], _EPS))[lv[:, c]] * (lv[:, c] > 0)
        w = 1.0 / (1.0 + np.exp(np.clip(lu - lm, -700, 700)))
        lam = float(w.mean()) if len(w) else lam
        for c in range(lv.shape[1]):
            if c in fixed:
                continue
            counts = np.bincount(lv[:, c], weights=w, minlength=len(m[c]))
            counts[0] = 0.0
            total = counts.sum()
            if total > 0:
                m[c] = np.maximum(counts / total, _EPS)
                m[c][0] = 0.0
    return m, lam


def estimate(
    cfg: ProfilesConfig,
    records: Sequence[MatchRecord],
    *,
    u_pairs: int = 200_000,
    seed: int = 0,
) -> FSModel:
    """Estimate m, u and the prior from ``records`` (unlabelled), as Splink does.

    Deterministic for a given ``seed``. Needs at least two records; with no blocking
    rule the ``m`` values stay at their defaults.
    """
    base = default_model(cfg)
    n = len(records)
    if n < 2:
        return base
    rng = random.Random(seed)
    total_pairs = n * (n - 1) // 2
    sample: set[tuple[int, int]] = set()
    want = min(u_pairs, total_pairs)
    while len(sample) < want:
        i, j = rng.randrange(n), rng.randrange(n)
        if i != j:
            sample.add((min(i, j), max(i, j)))
    lv_u = _level_matrix(base, records, sorted(sample))
    u: list[np.ndarray] = []
    for c, (_, comp) in enumerate(base.comparisons):
        counts = np.bincount(lv_u[:, c], minlength=len(comp.levels) + 3).astype(float)
        counts[0] = 0.0
        counts += 0.5  # smoothing: no level is impossible
        counts[0] = 0.0
        u.append(counts / counts.sum())
    m0 = [np.asarray(x, dtype=float) for x in base.m]
    names = [nm for nm, _ in base.comparisons]
    estimates: dict[int, list[np.ndarray]] = defaultdict(list)
    for r, rule in enumerate(cfg.blocking):
        pairs = sorted(candidate_pairs(cfg, records, [r]))
        if not pairs:
            continue
        fixed = {names.index(a) for a in rule if a in names}
        m_r, _ = _em(_level_matrix(base, records, pairs), m0, u, 0.1, fixed)
        for c in range(len(names)):
            if c not in fixed:
                estimates[c].append(m_r[c])
    m = [np.mean(estimates[c], axis=0) if estimates[c] else m0[c] for c in range(len(names))]
    all_pairs = sorted(candidate_pairs(cfg, records))
    lam = 0.1
    if all_pairs:
        _, lam = _em(_level_matrix(base, records, all_pairs), m, u, 0.1, set(range(len(names))))
    prior = min(max(lam * len(all_pairs) / total_pairs, 1e-9), 0.5)
    return FSModel(
        base.comparisons,
        tuple(tuple(float(v) for v in x) for x in m),
        tuple(tuple(float(v) for v in x) for x in u),
        prior,
    )


def iter_links(
    cfg: ProfilesConfig, model: FSModel, records: Sequence[MatchRecord]
) -> Iterator[tuple[int, int, float, dict[str, int]]]:
    """Probabilistic links ``(i, j, probability, levels)`` among blocked pairs."""
    for i, j in sorted(candidate_pairs(cfg, records)):
        p, ev = score(model, records[i], records[j])
        if p >= cfg.threshold:
            yield i, j, p, ev
