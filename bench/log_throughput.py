"""Log throughput: Headwater's append and append→consume→sink, next to the limit.

Baseline (the physical limit): raw binary COPY of the same rows into a plain table,
one transaction per batch, the COPY buffers built before timing starts.
Prints ratios measured in this run. Usage: python bench/log_throughput.py [--n 200000]
[--batch 1000] [--no-kafka]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import struct
import sys
import time
from collections.abc import Iterable

sys.path.insert(0, os.path.dirname(__file__))

import psycopg

from _common import Timer, embedded_database, row, run_until
from headwater.log.base import Record, TopicSpec
from headwater.log.copy_binary import LEN, NULL, SIGNATURE, TRAILER
from headwater.log.postgres import PostgresLog

VALUE = b"x" * 200
ROW = struct.Struct("!hiiiqiq")


def encode_rows(
    rows: Iterable[tuple[int, int, int, bytes | None, bytes | None, bytes | None]],
) -> bytes:
    """COPY stream of one row per record (partition int4, offset int8, ts_ms int8,
    key bytea, value bytea, headers jsonb as bytes): the baseline's layout."""
    out = [SIGNATURE]
    append = out.append
    for partition, offset, ts, key, value, headers in rows:
        append(ROW.pack(6, 4, partition, 8, offset, 8, ts))
        for col in (key, value):
            if col is None:
                append(NULL)
            else:
                append(LEN.pack(len(col)))
                append(col)
        if headers is None:
            append(NULL)
        else:
            append(LEN.pack(len(headers) + 1))
            append(b"\x01" + headers)
    append(TRAILER)
    return b"".join(out)


def records(n: int) -> list[Record]:
    return [Record(f"customer-{i % 10_000}".encode(), VALUE) for i in range(n)]


def raw_copy(dsn: str, n: int, batch: int) -> float:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            'CREATE TABLE raw (partition int4, "offset" int8, ts_ms int8, key bytea,'
            " value bytea, headers jsonb)"
        )
        conn.commit()
        now = int(time.time() * 1000)
        bufs = [
            encode_rows(
                (i % 3, i, now, f"customer-{i % 10_000}".encode(), VALUE, None)
                for i in range(s, min(s + batch, n))
            )
            for s in range(0, n, batch)
        ]
        with Timer() as t:
            for b in bufs:
                with conn.cursor().copy(
                    'COPY raw (partition, "offset", ts_ms, key, value, headers)'
                    " FROM STDIN (FORMAT BINARY)"
                ) as cp:
                    cp.write(b)
                conn.commit()
    return n / t.seconds


def append(dsn: str, topic: str, n: int, batch: int) -> float:
    log = PostgresLog(dsn)
    log.create_topic(TopicSpec(topic, 3))
    recs = records(n)
    with Timer() as t:
        for s in range(0, n, batch):
            log.append(topic, recs[s : s + batch])
    log.close()
    return n / t.seconds


def _produce(dsn: str, n: int, batch: int) -> None:
    log = PostgresLog(dsn)
    recs = [
        Record(f"customer-{i % 10_000}".encode(), b'{"v": "' + b"x" * 190 + b'"}') for i in range(n)
    ]
    for s in range(0, n, batch):
        log.append("e2e", recs[s : s + batch])


def end_to_end(dsn: str, n: int, batch: int) -> float:
    """A producer process appends while a worker copies into a table (append mode)."""
    from headwater.engine.worker import Worker, WorkerOptions
    from headwater.sinks.table import TableSink

    log = PostgresLog(dsn)
    log.create_topic(TopicSpec("e2e", 3))
    ctx = multiprocessing.get_context("spawn")
    producer = ctx.Process(target=_produce, args=(dsn, n, batch))
    worker = Worker(
        pipeline="bench",
        topic="e2e",
        processor=TableSink("sink"),
        log=log,
        dsn=dsn,
        options=WorkerOptions(batch_max_events=5000, batch_max_ms=20),
    )
    start = time.perf_counter()
    producer.start()
    probe = PostgresLog(dsn)
    run_until(worker, lambda: sum(probe.committed("bench", "e2e").values()) >= n)
    elapsed = time.perf_counter() - start
    producer.join()
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--no-kafka", action="store_true", help="skip the kafka backend (tansu)")
    args = ap.parse_args()
    print(f"log throughput: {args.n:,} records of 200 B, batches of {args.batch}, 3 partitions")
    with embedded_database() as dsn:
        limit = raw_copy(dsn, args.n, args.batch)
        hw = append(dsn, "bench", args.n, args.batch)
        e2e = end_to_end(dsn, args.n, args.batch)
    row("raw binary COPY, plain table (limit)", limit)
    row("headwater append, postgres log", hw, note=f"= {hw / limit:.0%} of the limit")
    row("append→consume→table sink, postgres log", e2e, note=f"= {e2e / limit:.0%} of the limit")
    if not args.no_kafka:
        from kafka_throughput import run as run_kafka

        run_kafka(args.n, args.batch, limit)


if __name__ == "__main__":
    main()
