"""``GET /v1/pipelines`` on real parts: an embedded PostgreSQL log, a table pipeline's
worker in a thread, and the API through FastAPI's test client.

Shows: state follows the worker (live while it runs, stopped when it is gone), counters,
lag and dead letters are exact, only an ``admin`` key may read it, and the throughput
meter's arithmetic."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from headwater.config.loader import load_settings
from headwater.engine.registry import build_processor
from headwater.engine.runtime import Runtime, bootstrap
from headwater.engine.worker import Worker, WorkerOptions
from headwater.log.base import Record
from headwater.serving.app import create_app
from headwater.serving.auth import new_key
from headwater.serving.pipelines import Throughput

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def setup(tmp_path: Path, dsn: str) -> Iterator[tuple[Runtime, TestClient, dict[str, str]]]:
    keys: dict[str, str] = {}
    entries = ""
    for name, scopes in (("app", ["ask", "feedback", "search", "profiles"]), ("ops", ["admin"])):
        keys[name], digest = new_key()
        entries += (
            f'[[serving.auth.keys]]\nname = "{name}"\nsha256 = "{digest}"\n'
            f"scopes = {json.dumps(scopes)}\n"
        )
    cfg = tmp_path / "headwater.toml"
    cfg.write_text(
        f'[storage]\npostgres = "{dsn}"\n{entries}'
        '[[topics]]\nname = "events"\npartitions = 2\n'
        '[[pipelines]]\nname = "copy"\ninput = "events"\nprocessor = "table"\n'
        'table = "sink.events"\nmode = "upsert"\n'
    )
    rt = bootstrap(load_settings(cfg), start=False)
    try:
        yield rt, TestClient(create_app(rt, ask_service=object())), keys
    finally:
        rt.close()


def _get(client: TestClient, key: str) -> Any:
    r = client.get("/v1/pipelines", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_pipelines_report_state_counters_and_dead_letters(
    setup: tuple[Runtime, TestClient, dict[str, str]],
) -> None:
    rt, client, keys = setup
    before = _get(client, keys["ops"])
    (p,) = before["pipelines"]
    assert (p["name"], p["state"], p["workers"], p["events"]) == ("copy", "stopped", 0, 0)
    assert p["throughput_eps"] is None and p["last_batch_age_s"] is None

    rt.log.append(
        "events",
        [Record(f"k{i}".encode(), json.dumps({"i": i}).encode()) for i in range(40)]
        + [Record(b"bad", b"\xff not json")],
    )
    assert _get(client, keys["ops"])["pipelines"][0]["lag"] == 41  # nothing applied yet

    worker = Worker(
        pipeline="copy",
        topic="events",
        processor=build_processor(rt.settings.all_pipelines()[0]),
        log=rt.log,
        dsn=rt.dsn,
        options=WorkerOptions(batch_max_events=10, batch_max_ms=5),
    )
    th = threading.Thread(target=worker.run, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 30
        while (p := _get(client, keys["ops"])["pipelines"][0])["events"] < 41:
            assert time.monotonic() < deadline, p
            time.sleep(0.1)
        assert (p["state"], p["workers"], p["lag"], p["dead_letters"]) == ("live", 1, 0, 1)
        assert p["dlq_topic"] == "copy.dlq"
        assert 0 <= p["last_batch_age_s"] < 30
        assert set(p["watermark"]) == {"0", "1"}
    finally:
        worker.stop()
        th.join(20)
    after = _get(client, keys["ops"])["pipelines"][0]
    assert (after["state"], after["workers"], after["events"]) == ("stopped", 0, 41)


def test_pipelines_need_the_admin_scope(
    setup: tuple[Runtime, TestClient, dict[str, str]],
) -> None:
    _, client, keys = setup
    assert client.get("/v1/pipelines").status_code == 401
    r = client.get("/v1/pipelines", headers={"Authorization": f"Bearer {keys['app']}"})
    assert r.status_code == 403 and "admin" in r.json()["detail"]


def test_throughput_is_counter_growth_over_the_kept_window() -> None:
    meter = Throughput(window_s=10, min_span_s=1)
    assert meter.observe(100.0, {"a": 0}) == {"a": None}  # nothing to compare with
    assert meter.observe(100.5, {"a": 50}) == {"a": None}  # span below min_span_s
    assert meter.observe(102.0, {"a": 200, "b": 7}) == {"a": 100.0, "b": None}
    # at 112 s the newest sample at least 10 s old is the one of 102 s: the base
    assert meter.observe(112.0, {"a": 400, "b": 27}) == {"a": 20.0, "b": 2.0}
    assert meter.observe(113.0, {"a": 0, "b": 27})["a"] == 0.0  # a reset never goes negative
