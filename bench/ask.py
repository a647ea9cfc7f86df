"""POST /v1/ask: throughput and latency at 1, 10 and 50 concurrent clients, extractive
generator, cache bypassed (every request retrieves and generates) and cache hits.

Setup: the 24-document FAQ of bench/_faq.py indexed by the real files source and
knowledge pipeline; the API runs in its own process (uvicorn, as `headwater up` runs
it) so that the clients in this process do not share its interpreter. Each client is a
thread with one keep-alive HTTP connection, asking in a loop for ``--seconds``.

- miss path: ``cache: "bypass"``, the 96 questions (canonical and paraphrases) in turn:
  embed, hybrid search, cosine of each passage, prompt, extractive answer, log append.
- hit path: the 24 canonical questions, asked once first (warming the cache), then
  asked again: exact lookup (no embedding), log append.
- similar path: the same questions lower-cased without their question mark (cosine
  about 0.98 to the cached ones, not the same text): embed, vector lookup, log append.

Baseline: the miss path measured in the same run; the hit path prints its speed-up.

Usage: python bench/ask.py [--seconds 8] [--clients 1,10,50]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

from _faq import INTENTS, documents
from _serving import kb_stack
from headwater.testing import free_port

SERVER = """
import sys, uvicorn
from headwater.config.loader import load_settings
from headwater.engine.runtime import Runtime, open_log
from headwater.serving.app import create_app
s = load_settings(sys.argv[1])
dsn = s.storage.postgres.get_secret_value()
rt = Runtime(s, dsn, open_log(s, dsn))
uvicorn.run(create_app(rt), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def post(conn: http.client.HTTPConnection, body: dict[str, Any]) -> dict[str, Any]:
    conn.request("POST", "/v1/ask", json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")
    return dict(json.loads(data))


def load(port: int, clients: int, seconds: float, questions: list[str], cache: str) -> Any:
    lat: list[float] = []
    server: list[float] = []
    states: dict[str, int] = {}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = n
        mine: list[float] = []
        inside: list[float] = []
        seen: dict[str, int] = {}
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            r = post(conn, {"question": questions[i % len(questions)], "cache": cache})
            mine.append(time.perf_counter() - t0)
            inside.append(r["timings_ms"]["total"])
            seen[r["cache"]] = seen.get(r["cache"], 0) + 1
            i += clients
        conn.close()
        with lock:
            lat.extend(mine)
            server.extend(inside)
            for k, v in seen.items():
                states[k] = states.get(k, 0) + v

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    lat.sort()
    server.sort()
    return (
        len(lat) / elapsed,
        lat[len(lat) // 2] * 1000,
        lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        server[len(server) // 2],
        states,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--clients", default="1,10,50")
    args = ap.parse_args()
    levels = [int(x) for x in args.clients.split(",")]
    canonical = [i.question for i in INTENTS]
    everything = [q for i in INTENTS for q in (i.question, *i.paraphrases)]
    with kb_stack(documents()) as stack:
        port = free_port()
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(stack.config), str(port)])
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                    for q in canonical:  # loads the model; warms the cache
                        post(conn, {"question": q})
                    conn.close()
                    break
                except (ConnectionRefusedError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
            print(f"POST /v1/ask, extractive generator, {args.seconds:.0f} s per row")
            print(
                f"  {'path':<7} {'clients':>7} {'QPS':>8} {'p50 ms':>8} {'p99 ms':>8}"
                f" {'server p50':>10}  cache"
            )
            p50: dict[tuple[str, int], float] = {}
            for name, questions, cache in (
                ("miss", everything, "bypass"),
                ("hit", canonical, "use"),
                ("similar", [q.lower().rstrip("?") for q in canonical], "use"),
            ):
                for n in levels:
                    qps, m, p99, inside, states = load(port, n, args.seconds, questions, cache)
                    p50[(name, n)] = m
                    print(
                        f"  {name:<7} {n:>7} {qps:>8.1f} {m:>8.1f} {p99:>8.1f} {inside:>10.1f}"
                        f"  {states}"
                    )
            for n in levels:
                miss = p50[("miss", n)]
                print(
                    f"  at {n} client(s), p50 vs miss: hit {miss / p50[('hit', n)]:.1f}x"
                    f" faster, similar {miss / p50[('similar', n)]:.1f}x"
                )
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
