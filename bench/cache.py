"""Semantic cache: precision / hit rate over thresholds, and stale answers after source
changes — Headwater's cache next to GPTCache 0.1.44 with the same embedder.

Data: bench/_faq.py — 24 hand-written FAQ intents in lexical near-pairs, each with a
document, a changed version of it, a canonical question and 3 paraphrases; plus 8
out-of-scope questions.

(a) Curve. Per cosine threshold: empty cache; the 24 canonical questions are asked
    (Headwater: POST /v1/ask's service in this process, extractive generator;
    GPTCache: ``put(question, intent)``); then the 72 paraphrases and 8 out-of-scope
    questions are looked up. A hit is *true* when it returns the paraphrase's own
    intent. precision = true hits / hits; hit rate = true hits / 72.
    GPTCache's faiss L2 evaluation accepts ``4 - |a-b|^2 >= 4 t``; on unit vectors that
    is cosine >= 2t - 1, so it runs with ``t = (1 + cosine) / 2`` — the same cut.
(b) Staleness. Cache warmed with the canonical questions; 12 of the 24 documents then
    change (the pipeline applies the edits); all 96 questions are asked again. An
    answer is *stale* when it differs from the answer computed now without the cache.
    GPTCache caches the same answer function (Headwater with cache bypass) and has no
    way to learn of the change. stale rate = stale / questions of changed intents.

GPTCache is installed by this script into bench/.venvs/gptcache (pinned below, with
sqlalchemy and faiss-cpu pre-installed: it would otherwise pip-install them itself);
it receives the vectors computed here, so both caches see identical embeddings.

Usage: python bench/cache.py [--thresholds 0.80,0.85,...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

from _faq import INTENTS, OUT_OF_SCOPE, documents
from _serving import Stack, kb_stack
from headwater.serving.ask import AskQuery
from headwater.serving.auth import ANONYMOUS
from headwater.serving.cache import clear

VENV = Path(__file__).parent / ".venvs" / "gptcache"
GPTCACHE_PINS = ["gptcache==0.1.44", "sqlalchemy==2.1.9", "faiss-cpu==1.15.1", "numpy==2.4.6"]

_RUNNER = textwrap.dedent(
    """
    import json, sys, tempfile
    import numpy as np
    from gptcache import Cache, Config
    from gptcache.adapter.api import get, put
    from gptcache.manager import CacheBase, VectorBase, get_data_manager
    from gptcache.processor.pre import get_prompt
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

    job = json.load(open(sys.argv[1]))
    vec = {k: np.asarray(v, dtype="float32") for k, v in job["vectors"].items()}
    out = []
    for i, run in enumerate(job["runs"]):
        d = tempfile.mkdtemp()
        cache = Cache()
        dm = get_data_manager(
            CacheBase("sqlite", sql_url=f"sqlite:///{d}/c.db"),
            VectorBase("faiss", dimension=job["dim"], index_path=f"{d}/f.index"),
        )
        cache.init(
            pre_embedding_func=get_prompt,
            embedding_func=lambda text, **kw: vec[text],
            data_manager=dm,
            similarity_evaluation=SearchDistanceEvaluation(),
            config=Config(similarity_threshold=run["threshold"]),
        )
        for q, data in run["puts"]:
            put(q, data, cache_obj=cache)
        out.append([get(q, cache_obj=cache) for q in run["gets"]])
    json.dump(out, open(sys.argv[2], "w"))
    """
)


def ensure_gptcache() -> Path:
    py = VENV / "bin" / "python"
    marker = VENV / ".pins"
    if not (py.exists() and marker.exists() and marker.read_text() == " ".join(GPTCACHE_PINS)):
        print(f"installing {GPTCACHE_PINS[0]} into {VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *GPTCACHE_PINS], check=True)
        marker.write_text(" ".join(GPTCACHE_PINS))
    return py


def gptcache_runs(py: Path, vectors: dict[str, list[float]], runs: list[dict[str, Any]]) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        job, res, script = Path(tmp, "job.json"), Path(tmp, "res.json"), Path(tmp, "run.py")
        job.write_text(json.dumps({"dim": 384, "vectors": vectors, "runs": runs}))
        script.write_text(_RUNNER)
        subprocess.run([str(py), str(script), str(job), str(res)], check=True)
        return json.loads(res.read_text())


def ask(service: Any, q: str, cache: str = "use") -> dict[str, Any]:
    return dict(service.ask(AskQuery(q, cache=cache), ANONYMOUS))  # type: ignore[arg-type]


def curve(stack: Stack, py: Path, thresholds: list[float], vectors: dict[str, Any]) -> None:
    paraphrases = [(p, i.key) for i in INTENTS for p in i.paraphrases]
    gets = [q for q, _ in paraphrases] + list(OUT_OF_SCOPE)
    truth = [k for _, k in paraphrases] + [None] * len(OUT_OF_SCOPE)
    runs = [
        {"threshold": (1 + t) / 2, "puts": [[i.question, i.key] for i in INTENTS], "gets": gets}
        for t in thresholds
    ]
    gpt = gptcache_runs(py, vectors, runs)
    print("\n(a) precision / hit rate over the cosine threshold (72 paraphrases, 8 out of scope)")
    head = f"{'headwater prec':>14} {'hit rate':>8}   {'gptcache prec':>13} {'hit rate':>8}"
    print(f"  {'threshold':>9}  {head}")
    for t, gpt_hits in zip(thresholds, gpt, strict=True):
        # Warm with every canonical question stored (as GPTCache's put does): at a low
        # threshold, warming with the measured service would hit earlier entries.
        warm = stack.service(threshold=1.0)
        with warm.pool.connection() as conn:
            clear(conn)
        answer_of = {ask(warm, i.question)["answer"]: i.key for i in INTENTS}
        warm.close()
        service = stack.service(threshold=t)
        hw_hits: list[str | None] = []
        for q in gets:
            r = ask(service, q)
            hw_hits.append(answer_of.get(r["answer"], "?") if r["cache"] == "hit" else None)
        service.close()
        cells = []
        for hits in (hw_hits, gpt_hits):
            true = sum(1 for h, k in zip(hits, truth, strict=True) if h is not None and h == k)
            n = sum(1 for h in hits if h is not None)
            cells.append((true / n if n else 1.0, true / len(paraphrases)))
        print(
            f"  {t:>9.2f}  {cells[0][0]:>14.3f} {cells[0][1]:>8.3f}   "
            f"{cells[1][0]:>13.3f} {cells[1][1]:>8.3f}"
        )


def staleness(stack: Stack, py: Path, threshold: float, vectors: dict[str, Any]) -> None:
    service = stack.service(threshold=threshold)
    with service.pool.connection() as conn:
        clear(conn)
    questions = [(q, i.key) for i in INTENTS for q in (i.question, *i.paraphrases)]
    before = {i.question: ask(service, i.question)["answer"] for i in INTENTS}  # warm
    changed = frozenset(i.key for i in INTENTS[::2])
    stack.write(documents(changed))
    stack.sync()
    served = [ask(service, q) for q, _ in questions]
    service.close()
    gpt = gptcache_runs(
        py,
        vectors,
        [
            {
                "threshold": (1 + threshold) / 2,
                "puts": [[i.question, before[i.question]] for i in INTENTS],
                "gets": [q for q, _ in questions],
            }
        ],
    )[0]
    # An answer served from the cache is stale when the question it was cached for now
    # gets another answer; it is a wrong-intent hit when that question is another
    # intent's. Headwater also caches the misses of this round: their entries count.
    entry_of = {a: q for q, a in before.items()}
    for (q, _), r in zip(questions, served, strict=True):
        if r["cache"] == "miss":
            entry_of.setdefault(r["answer"], q)
    intent_of = {q: k for q, k in questions}
    svc = stack.service(threshold=threshold)
    fresh = {q: ask(svc, q, cache="bypass")["answer"] for q, _ in questions}
    svc.close()

    def rates(answers: list[str | None]) -> tuple[int, int, int]:
        hits = stale = wrong = 0
        for (_, key), a in zip(questions, answers, strict=True):
            if a is None:
                continue
            hits += 1
            q = entry_of.get(a)
            if q is None or fresh[q] != a:
                stale += 1
            if q is None or intent_of[q] != key:
                wrong += 1
        return hits, stale, wrong

    hw = rates([r["answer"] if r["cache"] == "hit" else None for r in served])
    gp = rates(gpt)
    unchanged_hits = sum(
        1
        for r, (_, k) in zip(served, questions, strict=True)
        if r["cache"] == "hit" and k not in changed
    )
    print(
        f"\n(b) 12 of 24 documents changed, then 96 questions (cosine threshold {threshold});"
        " stale: served from the cache but no longer what its question gets"
    )
    print(f"  {'':<10} {'hits':>5} {'stale':>6} {'stale rate':>10} {'wrong intent':>12}")
    for name, (hits, stale, wrong) in (("headwater", hw), ("gptcache", gp)):
        print(f"  {name:<10} {hits:>5} {stale:>6} {stale / len(questions):>10.3f} {wrong:>12}")
    print(f"  headwater hits on unchanged intents: {unchanged_hits} of 48 (entries whose")
    print("  retrieved passages include a changed document are invalidated too)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--thresholds", default="0.60,0.65,0.70,0.75,0.80,0.85,0.90,0.95")
    ap.add_argument("--stale-threshold", type=float, default=0.80)
    args = ap.parse_args()
    thresholds = [float(x) for x in args.thresholds.split(",")]
    py = ensure_gptcache()
    with kb_stack(documents()) as stack:
        texts = sorted(
            {q for i in INTENTS for q in (i.question, *i.paraphrases)} | set(OUT_OF_SCOPE)
        )
        vecs = stack.embedder.embed(texts)
        vectors = {t: v.tolist() for t, v in zip(texts, vecs, strict=True)}
        curve(stack, py, thresholds, vectors)
        staleness(stack, py, args.stale_threshold, vectors)


if __name__ == "__main__":
    main()
