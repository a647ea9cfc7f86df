"""`headwater up` end to end: workers, HTTP server, status, topics, tail, graceful stop."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from headwater.log.base import Record
from headwater.log.postgres import PostgresLog
from headwater.testing import free_port

from .conftest import query


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headwater", *args], capture_output=True, text=True, timeout=60
    )


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read().decode()


def test_up_serves_health_metrics_and_stops_gracefully(tmp_path: Path, dsn: str) -> None:
    port = free_port()
    cfg = tmp_path / "headwater.toml"
    cfg.write_text(
        f'[storage]\npostgres = "{dsn}"\n[server]\nport = {port}\n'
        "[worker]\nbatch_max_ms = 10\n"
        '[[topics]]\nname = "events"\npartitions = 2\n'
        '[[pipelines]]\nname = "copy"\ninput = "events"\nprocessor = "table"\n'
        'table = "sink.events"\nmode = "upsert"\nprocesses = 2\n'
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "headwater", "up", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                assert up.poll() is None, up.stdout.read() if up.stdout else ""
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert status == 200 and json.loads(body)["status"] == "ok"
        workers_sql = (
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'headwater-worker:copy'"
        )
        while query(dsn, workers_sql)[0][0] < 2:  # both worker processes joined
            assert time.monotonic() < deadline
            time.sleep(0.05)
        log = PostgresLog(dsn)
        log.append(
            "events",
            [Record(f"k{i}".encode(), json.dumps({"i": i}).encode()) for i in range(200)]
            + [Record(b"x", b"\xff not json")],
        )
        while (
            query(dsn, "SELECT count(*) FROM headwater.pipeline_stats WHERE events > 0")[0][0] < 2
            or sum(log.committed("copy", "events").values()) < 201
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert query(dsn, "SELECT count(*) FROM sink.events") == [(200,)]
        assert query(dsn, workers_sql)[0][0] == 2

        _, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        assert 'headwater_pipeline_dead_letters{pipeline="copy"} 1.0' in metrics
        assert 'headwater_pipeline_lag_records{partition="0",pipeline="copy"} 0.0' in metrics

        st = _cli("status", "--config", str(cfg), "--json")
        assert st.returncode == 0, st.stderr
        (p,) = json.loads(st.stdout)["pipelines"]
        assert (p["name"], p["events"], p["lag"], p["dead_letters"]) == ("copy", 201, 0, 1)

        tp = json.loads(_cli("topics", "--config", str(cfg), "--json").stdout)["topics"]
        assert {t["name"]: t["records"] for t in tp} == {
            "events": 201,
            "copy.dlq": 1,
            "conversations": 0,  # the API's topics
            "feedback": 0,
        }

        tail = _cli("tail", "copy.dlq", "--config", str(cfg))
        (line,) = tail.stdout.splitlines()
        dead = json.loads(line)
        assert dead["key"] == "x" and "utf-8" in dead["headers"]["error"].lower()
        assert dead["value"].startswith("base64:")
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(60)
    assert code == 0
    left = query(
        dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'headwater-worker:%%'",
    )[0][0]
    assert left == 0
