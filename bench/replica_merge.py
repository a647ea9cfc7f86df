"""The replica processor: merge rate of CDC envelopes into a replica table.

Envelopes shaped like the PostgreSQL source's (7 columns: ints, text, bool, float,
jsonb) are appended to a 3-partition topic on the postgres log; a worker merges them
(insert phase: N new keys; update phase: N updates of existing keys, 10 per key per
batch on average collapsing to one). Also the processor alone, without the log.

Run: python bench/replica_merge.py [rows]
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import psycopg

from _common import Timer, embedded_database, row
from headwater.engine.worker import Worker, WorkerOptions
from headwater.log.base import LogRecord, Record, TopicSpec
from headwater.log.postgres import PostgresLog
from headwater.sinks.replica import ReplicaSink


def envelope(i: int, op: str, lsn: int, v: int) -> Record:
    after = {
        "id": i,
        "name": f"customer {i}",
        "score": v,
        "active": i % 2 == 0,
        "ratio": i / 7,
        "attrs": {"tier": i % 3, "tags": ["a", "b"]},
        "email": f"c{i}@example.com",
    }
    src = {
        "connector": "postgresql",
        "name": "crm",
        "db": "src",
        "schema": "public",
        "table": "customers",
        "lsn": lsn,
        "txId": lsn,
        "ts_ms": 0,
        "snapshot": "false",
    }
    body = {"op": op, "before": None, "after": after, "source": src, "ts_ms": 0}
    return Record(
        json.dumps({"id": i}, separators=(",", ":")).encode(),
        json.dumps(body, separators=(",", ":")).encode(),
        {"position": f"0/{lsn:X}"},
    )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(f"replica merge, {n:,} rows per phase")
    with embedded_database() as dsn:
        log = PostgresLog(dsn)
        upd = n // 10
        phases = (
            ("insert (new keys)", [envelope(i, "c", 100 + i, 0) for i in range(n)]),
            ("update (10 per key)", [envelope(j % upd, "u", 100 + n + j, j) for j in range(n)]),
        )
        log.create_topic(TopicSpec("replica-customers.dlq", 1))
        for k, (phase, events) in enumerate(phases):
            # One topic per phase; the same pipeline name and table.
            topic = f"crm.public.customers{k}"
            log.create_topic(TopicSpec(topic, 3))
            log.append(topic, events)
            w = Worker(
                pipeline="replica-customers",
                topic=topic,
                processor=ReplicaSink("crm", "customers"),
                log=log,
                dsn=dsn,
                options=WorkerOptions(batch_max_events=5000, batch_max_ms=0),
            )
            with Timer() as t:
                stats = w.run(until_idle=True)
            assert stats.events == n and stats.dead_letters == 0
            row(f"worker, batches of 5000: {phase}", n / t.seconds, "events/s")
        with psycopg.connect(dsn) as c:
            assert c.execute("SELECT count(*) FROM crm.customers").fetchone() == (n,)
        # The processor alone on LogRecords (no log reads, no offsets).
        recs = [
            LogRecord("t", i % 3, i, r.key, r.value, r.headers, 0)
            for i, r in enumerate(envelope(i, "c", 100 + i, 0) for i in range(n))
        ]
        sink = ReplicaSink("crm", "alone")
        with psycopg.connect(dsn) as c:
            sink.setup(c)
            c.commit()
            with Timer() as t:
                for k in range(0, n, 5000):
                    sink.process(c, recs[k : k + 5000])
                    c.commit()
        row("processor alone, batches of 5000: insert", n / t.seconds, "rows/s")
        with psycopg.connect(dsn) as c, Timer() as t:
            for k in range(0, n, 5000):
                sink.process(c, recs[k : k + 5000])
                c.commit()
        row("processor alone, batches of 5000: upsert all", n / t.seconds, "rows/s")
        log.close()


if __name__ == "__main__":
    main()
