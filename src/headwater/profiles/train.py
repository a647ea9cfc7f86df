"""Estimate the Fellegi-Sunter parameters from the graph's records and re-score it.

``headwater profiles train`` runs :func:`train`: m/u and the prior are estimated from
the records the graph holds (:func:`headwater.profiles.matcher.estimate`), stored, and
every probabilistic link is re-scored with them; components and profiles are then
recomputed (person ids kept where possible, as for any incremental change). Runs in
one transaction under the graph lock, so workers wait and then continue with the new
parameters.
"""

from __future__ import annotations

from headwater.config.profiles import ProfilesConfig
from headwater.log.base import Conn
from headwater.profiles import graph
from headwater.profiles.matcher import FSModel, MatchRecord, estimate
from headwater.profiles.processor import GRAPH_LOCK, store_model


def train(conn: Conn, cfg: ProfilesConfig, *, seed: int = 0) -> tuple[FSModel, int]:
    """Estimate, store and apply new parameters; returns them and the persons rebuilt."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (GRAPH_LOCK,))
        rows = conn.execute(
            "SELECT record_id, attributes FROM headwater_profiles.records ORDER BY record_id"
        ).fetchall()
        recs = {rid: MatchRecord.of(rid, (), attrs) for rid, attrs in rows}
        model = estimate(cfg, list(recs.values()), seed=seed)
        store_model(conn, model)
        return model, graph.rescore(conn, cfg, model, recs)
