"""The foundation walk-through: embedded PostgreSQL, the log, a worker, a table.

Everything is real: the embedded server is started in ``DATA_DIR``, orders are
appended to a 3-partition topic, a worker merges them into ``demo.orders`` (latest
value per order, deletes applied) exactly once, and a malformed record lands in the
dead-letter topic while the pipeline keeps going.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from headwater.config.loader import validate_settings
from headwater.engine.runtime import bootstrap
from headwater.engine.status import pipeline_statuses
from headwater.engine.worker import Worker, WorkerOptions
from headwater.log.base import Record
from headwater.sinks.table import TableSink
from headwater.storage.database import connect
from headwater.storage.embedded import EmbeddedPostgres


def run(data_dir: Path, events: int, console: Console) -> None:
    """Run the walk-through; raises HeadwaterError subclasses on failure."""
    settings = validate_settings(
        {
            "project": {"data_dir": str(data_dir)},
            "topics": [{"name": "demo.orders", "partitions": 3}],
            "pipelines": [
                {
                    "name": "orders-replica",
                    "input": "demo.orders",
                    "processor": "table",
                    "table": "demo.orders",
                    "mode": "upsert",
                }
            ],
        },
        Path("headwater-demo.toml"),
    )
    pg = EmbeddedPostgres(settings.data_dir / "postgres")
    if pg.is_running():
        pg.stop()
    if settings.data_dir.exists():  # the demo's own folder: every run starts clean
        shutil.rmtree(settings.data_dir)
    logging.getLogger("headwater.engine.worker").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    rt = bootstrap(settings)
    console.print(
        f"[bold]1.[/bold] PostgreSQL 18 + pgvector ready in {settings.data_dir} "
        f"({time.perf_counter() - t0:.1f}s)"
    )
    try:
        rng = random.Random(42)
        records = []
        for i in range(events):
            order = f"order-{rng.randrange(events // 4 or 1)}"
            if rng.random() < 0.05:
                records.append(Record(order.encode(), None))  # cancelled: delete
            else:
                doc = {"order": order, "amount": round(rng.uniform(5, 500), 2), "rev": i}
                records.append(Record(order.encode(), json.dumps(doc).encode()))
        records.insert(events // 2, Record(b"order-broken", b"{oops, not json"))
        t0 = time.perf_counter()
        for s in range(0, len(records), 1000):
            rt.log.append("demo.orders", records[s : s + 1000])
        dt = time.perf_counter() - t0
        console.print(
            f"[bold]2.[/bold] appended {len(records):,} order events to the log "
            f"({len(records) / dt:,.0f}/s), one of them malformed"
        )
        t0 = time.perf_counter()
        worker = Worker(
            pipeline="orders-replica",
            topic="demo.orders",
            processor=TableSink("demo.orders", "upsert"),
            log=rt.log,
            dsn=rt.dsn,
            options=WorkerOptions(batch_max_events=2000, batch_max_ms=10),
        )
        stats = worker.run(until_idle=True)
        dt = time.perf_counter() - t0
        console.print(
            f"[bold]3.[/bold] worker merged {stats.events:,} events into demo.orders "
            f"in {dt:.2f}s ({stats.events / dt:,.0f}/s), exactly once; "
            f"{stats.dead_letters} dead-lettered"
        )
        expected: dict[bytes | None, bytes | None] = {}
        for r in records:
            if r.key == b"order-broken":
                continue
            expected[r.key] = r.value
        want = {k.decode(): json.loads(v) for k, v in expected.items() if k and v}
        with connect(rt.dsn) as conn:
            got = dict(conn.execute("SELECT key, value FROM demo.orders").fetchall())
        ok = got == want
        console.print(
            f"[bold]4.[/bold] replica check: {len(got):,} live orders, "
            + ("[green]identical to replaying the events[/green]" if ok else "[red]MISMATCH[/red]")
        )
        table = Table(title="headwater status")
        for col in ("pipeline", "events", "lag", "dead letters", "partitions (committed/end)"):
            table.add_column(col)
        for st in pipeline_statuses(rt):
            table.add_row(
                st.name,
                str(st.events),
                str(st.lag),
                str(st.dead_letters),
                " ".join(f"{p.committed}/{p.end}" for p in st.partitions),
            )
        console.print(table)
        (dead,) = rt.log.read("orders-replica.dlq", 0, 0, 1)
        console.print(
            f"dead letter: key={dead.key!r} error={dead.headers['error']!r} "
            f"origin={dead.headers['origin_topic']}/{dead.headers['origin_partition']}"
            f"/{dead.headers['origin_offset']}"
        )
        if not ok:
            from headwater.errors import HeadwaterError

            raise HeadwaterError("demo replica does not match the events")
    finally:
        rt.close()
        pg.stop()  # the demo always starts its own server
