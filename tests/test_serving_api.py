"""/v1/ask and /v1/feedback end to end on real parts: embedded PostgreSQL, the real
MiniLM model (loaded once per session), a files source and the knowledge pipeline
running in threads, and the API through FastAPI's test client.

Shows: read-your-writes after a document edit (new version cited, the earlier cached
answer not served), invalidation inside the changing transaction, the stale flag on
timeout, auth refusals, and malformed/oversized requests answered 4xx while the
server keeps serving."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from headwater.config.loader import load_settings
from headwater.engine.runtime import Runtime, bootstrap
from headwater.engine.worker import Worker, WorkerOptions
from headwater.knowledge.embedder import default_embedder
from headwater.knowledge.processor import KnowledgeProcessor
from headwater.serving.app import create_app
from headwater.serving.ask import AskService
from headwater.serving.auth import new_key
from headwater.sources.files.source import FileSource

from .conftest import query

pytestmark = pytest.mark.timeout(300)

REFUNDS_V1 = (
    "# Refunds\n\nRefunds are paid back to the original card within 14 days of the"
    " return. Store credit is issued at once.\n"
)
REFUNDS_V2 = (
    "# Refunds\n\nRefunds are paid back to the original card within 3 days of the"
    " return. Store credit is issued at once.\n"
)
DOCS = {
    "shipping.md": "# Shipping\n\nOrders ship from Lyon. Shipping is free above 50 euros.\n",
    "privacy.md": "# Privacy\n\nWe keep order history for five years. Cookies are optional.\n",
    "lounge.md": (
        "# Lounge access\n\nGold members may use the airport lounge with one guest."
        " Silver members pay 20 euros per visit.\n"
    ),
}
QUESTION = "How many days until a refund is paid back?"


@pytest.fixture(scope="session")
def embedder() -> Any:
    """The real model, loaded once per test session (shared with the knowledge tests)."""
    return default_embedder()


@dataclass
class Stack:
    rt: Runtime
    folder: Path
    client: TestClient
    service: AskService
    keys: dict[str, str]
    stop: threading.Event
    worker: Worker
    config: Path

    def ask(self, key: str = "app", **body: Any) -> Any:
        r = self.client.post("/v1/ask", json=body, headers=self.auth(key))
        assert r.status_code == 200, r.text
        return r.json()

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[key]}"}


def _start(target: Any, *args: Any) -> threading.Thread:
    th = threading.Thread(target=target, args=args, daemon=True)
    th.start()
    return th


@pytest.fixture
def stack(tmp_path: Path, dsn: str, embedder: Any) -> Iterator[Stack]:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in {**DOCS, "refunds.md": REFUNDS_V1}.items():
        (folder / name).write_text(text)
    keys: dict[str, str] = {}
    entries = []
    for name, scopes in (("app", ["ask", "feedback"]), ("reader", ["search"]), ("ops", ["admin"])):
        keys[name], digest = new_key()
        entries.append(
            f'[[serving.auth.keys]]\nname = "{name}"\nsha256 = "{digest}"\n'
            f"scopes = {json.dumps(scopes)}\n"
        )
    cfg = tmp_path / "headwater.toml"
    cfg.write_text(
        f'[storage]\npostgres = "{dsn}"\n'
        "[serving]\nmax_body_bytes = 4096\n[serving.freshness]\ntimeout_s = 8\n"
        + "".join(entries)
        + f'[[sources]]\nkind = "files"\nname = "docs"\npath = "{folder}"\n'
    )
    settings = load_settings(cfg)
    rt = bootstrap(settings, start=False)
    p = next(p for p in settings.all_pipelines() if p.processor == "knowledge")
    worker = Worker(
        pipeline=p.name,
        topic=p.input,
        processor=KnowledgeProcessor(p, embedder),  # type: ignore[arg-type]
        log=rt.log,
        dsn=rt.dsn,
        options=WorkerOptions(batch_max_events=64, batch_max_ms=5),
    )
    stop = threading.Event()
    src_cfg = next(s for s in settings.sources if s.kind == "files")
    threads = [
        _start(FileSource(src_cfg, rt.log, rt.dsn).run, stop),  # type: ignore[arg-type]
        _start(worker.run),
    ]
    service = AskService(rt, embedder=embedder)
    client = TestClient(create_app(rt, ask_service=service))
    deadline = time.monotonic() + 60
    while query(rt.dsn, "SELECT count(*) FROM headwater_kb.documents")[0][0] < 4:
        assert time.monotonic() < deadline, "knowledge base not built"
        time.sleep(0.1)
    try:
        yield Stack(rt, folder, client, service, keys, stop, worker, cfg)
    finally:
        stop.set()
        worker.stop()
        for th in threads:
            th.join(15)
        service.close()
        rt.close()


def _entries(dsn: str) -> int:
    return int(query(dsn, "SELECT count(*) FROM headwater_serving.cache_entries")[0][0])


def test_fresh_read_cites_the_new_version_and_never_serves_the_old_answer(stack: Stack) -> None:
    first = stack.ask(question=QUESTION, consistency="fresh")
    assert first["stale"] is False and first["cache"] == "miss"
    assert "14 days" in first["answer"] and "[1]" in first["answer"]
    cited = first["citations"][0]
    assert cited["doc_id"].endswith("refunds.md") and "14 days" in cited["text"]
    assert first["as_of"]["kb-docs"] is not None
    again = stack.ask(question=QUESTION)
    assert again["cache"] == "hit" and again["answer"] == first["answer"]
    assert again["conversation_id"] != first["conversation_id"]
    assert _entries(stack.rt.dsn) == 1

    (stack.folder / "refunds.md").write_text(REFUNDS_V2)
    t0 = time.monotonic()
    fresh = stack.ask(question=QUESTION, consistency="fresh")
    waited = time.monotonic() - t0
    assert fresh["stale"] is False, fresh
    assert fresh["cache"] == "miss"  # the cached 14-day answer was invalidated
    assert "3 days" in fresh["answer"] and "14 days" not in fresh["answer"]
    new = next(c for c in fresh["citations"] if c["doc_id"] == cited["doc_id"])
    assert new["version"] > cited["version"] and "3 days" in new["text"]
    assert fresh["timings_ms"]["freshness"] > 0 and waited < 8
    assert stack.ask(question=QUESTION)["cache"] == "hit"


def test_invalidation_happens_in_the_changing_transaction(stack: Stack) -> None:
    # k=1: the answer is given (and depends on) the refunds chunk only
    assert stack.ask(question=QUESTION, k=1)["citations"][0]["doc_id"].endswith("refunds.md")
    assert _entries(stack.rt.dsn) == 1
    with psycopg.connect(stack.rt.dsn) as conn:
        conn.execute(
            "UPDATE headwater_kb.chunks SET text = text || ' (edited)'"
            " WHERE doc_id LIKE '%%refunds.md'"
        )
        inside = conn.execute("SELECT count(*) FROM headwater_serving.cache_entries").fetchone()
        assert inside == (0,)
        assert _entries(stack.rt.dsn) == 1  # others still see it until we commit
        conn.rollback()
    assert _entries(stack.rt.dsn) == 1
    # A new chunk of a document the answer used invalidates it; another document's does not.
    with psycopg.connect(stack.rt.dsn) as conn:
        conn.execute(
            "INSERT INTO headwater_kb.chunks (chunk_id, doc_id, version, ordinal, text,"
            " text_hash, model) SELECT 'x-' || chunk_id, doc_id, version, 99, 'extra', 'h', model"
            " FROM headwater_kb.chunks WHERE doc_id LIKE '%%shipping.md' LIMIT 1"
        )
    assert _entries(stack.rt.dsn) == 1
    with psycopg.connect(stack.rt.dsn) as conn:
        conn.execute(
            "INSERT INTO headwater_kb.chunks (chunk_id, doc_id, version, ordinal, text,"
            " text_hash, model) SELECT 'x-' || chunk_id, doc_id, version, 99, 'extra', 'h', model"
            " FROM headwater_kb.chunks WHERE doc_id LIKE '%%refunds.md' LIMIT 1"
        )
    assert _entries(stack.rt.dsn) == 0
    # TTL backstop: an expired entry is not served (and is purged by later stores)
    assert stack.ask(question=QUESTION, k=1)["cache"] == "miss"
    assert stack.ask(question=QUESTION, k=1)["cache"] == "hit"
    with psycopg.connect(stack.rt.dsn, autocommit=True) as conn:
        conn.execute("UPDATE headwater_serving.cache_entries SET expires_at = now()")
    assert stack.ask(question=QUESTION, k=1)["cache"] == "miss"
    assert _entries(stack.rt.dsn) == 1


def test_fresh_read_times_out_as_stale_when_the_pipeline_is_stopped(stack: Stack) -> None:
    stack.worker.stop()
    time.sleep(0.3)
    (stack.folder / "refunds.md").write_text(REFUNDS_V2)
    res = stack.ask(question=QUESTION, consistency="fresh")
    assert res["stale"] is True and res["timings_ms"]["freshness"] >= 7000
    assert "14 days" in res["answer"]  # what the stores hold, honestly marked


def test_auth_refusals(stack: Stack) -> None:
    c = stack.client
    body = {"question": QUESTION}
    assert c.post("/v1/ask", json=body).status_code == 401
    r = c.post("/v1/ask", json=body, headers={"Authorization": "Bearer hw_not_a_key"})
    assert r.status_code == 401 and "unknown API key" in r.json()["detail"]
    r = c.post("/v1/ask", json=body, headers=stack.auth("reader"))
    assert r.status_code == 403 and "lacks scope 'ask'" in r.json()["detail"]
    assert c.post("/v1/ask", json=body, headers=stack.auth("ops")).status_code == 200
    r = c.get("/v1/search", params={"q": "refund"}, headers=stack.auth("reader"))
    assert r.status_code == 200 and r.json()["hits"]
    assert c.get("/v1/search", params={"q": "refund"}, headers=stack.auth("app")).status_code == 403
    r = c.get("/v1/profiles/alice@example.com", headers=stack.auth("app"))
    assert r.status_code == 403 and "lacks scope 'profiles'" in r.json()["detail"]
    assert c.get("/v1/profiles/alice@example.com").status_code == 401
    assert c.get("/v1/profiles/nobody@example.com", headers=stack.auth("ops")).status_code == 404
    spec = c.get("/openapi.json")
    assert spec.status_code == 200 and {"/v1/ask", "/v1/feedback"} <= set(spec.json()["paths"])
    assert c.get("/healthz").status_code == 200


def test_malformed_and_oversized_requests_get_4xx_and_the_server_keeps_serving(
    stack: Stack,
) -> None:
    c, h = stack.client, stack.auth("app")
    bad: list[tuple[Any, int, str]] = [
        (b"{not json", 422, "JSON"),
        ({}, 422, "question"),
        ({"question": ""}, 422, "question"),
        ({"question": "x", "k": 0}, 422, "k"),
        ({"question": "x", "k": 50}, 422, "serving.max_k"),
        ({"question": "x", "consistency": "eventual"}, 422, "consistency"),
        ({"question": "x", "cache": "maybe"}, 422, "cache"),
        ({"question": "x", "unknown": 1}, 422, "unknown"),
        ({"question": ["x"]}, 422, "question"),
    ]
    for payload, status, word in bad:
        if isinstance(payload, bytes):
            r = c.post(
                "/v1/ask", content=payload, headers={**h, "Content-Type": "application/json"}
            )
        else:
            r = c.post("/v1/ask", json=payload, headers=h)
        assert r.status_code == status, (payload, r.text)
        assert word in r.text, (payload, r.text)
    huge = json.dumps({"question": "x" * 10_000})
    r = c.post("/v1/ask", content=huge, headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 413 and "4096" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield b'{"question": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}'

    r = c.post("/v1/ask", content=chunks(), headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 413
    ok = stack.ask(question=QUESTION)
    assert "days" in ok["answer"]

    # feedback: appended to its topic; bad ones refused
    fb = {"conversation_id": ok["conversation_id"], "rating": 5, "comment": "clear"}
    r = c.post("/v1/feedback", json=fb, headers=h)
    assert r.status_code == 200 and r.json()["accepted"] is True
    missing = {**fb, "conversation_id": "00000000-0000-4000-8000-000000000000"}
    assert c.post("/v1/feedback", json=missing, headers=h).status_code == 404
    assert c.post("/v1/feedback", json={**fb, "rating": 9}, headers=h).status_code == 422
    assert c.post("/v1/feedback", json=fb, headers=stack.auth("reader")).status_code == 403
    values = _topic_values(stack.rt, "feedback")
    assert [(v["conversation_id"], v["rating"]) for v in values] == [(ok["conversation_id"], 5)]
    convs = _topic_values(stack.rt, "conversations")
    assert ok["conversation_id"] in {v["conversation_id"] for v in convs}
    assert all("question" in v and "answer" in v for v in convs)


def test_openai_compatible_generator_end_to_end(stack: Stack, embedder: Any) -> None:
    from headwater.serving.ask import AskQuery
    from headwater.serving.auth import ANONYMOUS
    from headwater.serving.generators.openai import OpenAIChat

    from .fake_openai import FakeOpenAIScript, fake_openai

    script = FakeOpenAIScript(reply="Refunds are paid within 14 days [1].", fail_next=[503])
    with fake_openai(script) as url:
        chat = OpenAIChat(base_url=url, model="fake-1", api_key=None, backoff_initial_s=0.01)
        service = AskService(stack.rt, embedder=embedder, generator=chat)
        try:
            res = service.ask(AskQuery(QUESTION, cache="bypass"), ANONYMOUS)
        finally:
            service.close()
    assert res["answer"] == script.reply and chat.attempts == 2
    with fake_openai(script) as url:
        chat = OpenAIChat(base_url=url, model="fake-1", api_key=None)
        service = AskService(stack.rt, embedder=embedder, generator=chat)
        try:
            events = list(service.ask_stream(AskQuery(QUESTION), ANONYMOUS))
        finally:
            service.close()
    deltas = [d["text"] for name, d in events if name == "delta"]
    assert len(deltas) > 3 and "".join(deltas) == script.reply
    assert events[-1][0] == "answer" and events[-1][1]["citations"][0]["doc_id"].endswith(
        "refunds.md"
    )
    assert [c["doc_id"].endswith("refunds.md") for c in res["citations"]] == [True]
    user = script.requests[-1]["messages"][1]["content"]
    assert user.count("<document ") >= 2 and user.endswith(f"Question: {QUESTION}")


def test_streamed_answer_is_server_sent_events(stack: Stack) -> None:
    def events(body: dict[str, Any]) -> list[tuple[str, Any]]:
        r = stack.client.post("/v1/ask", json=body, headers=stack.auth("app"))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        out = []
        for block in r.text.strip().split("\n\n"):
            name, data = block.split("\n", 1)
            out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
        return out

    first = events({"question": QUESTION, "stream": True})
    assert [n for n, _ in first] == ["delta", "answer"]
    assert first[1][1]["answer"] == first[0][1]["text"] and first[1][1]["cache"] == "miss"
    again = events({"question": QUESTION, "stream": True})
    assert again[1][1]["cache"] == "hit" and again[1][1]["answer"] == first[1][1]["answer"]
    r = stack.client.post(
        "/v1/ask", json={"question": "x", "k": 99, "stream": True}, headers=stack.auth("app")
    )
    assert r.status_code == 422  # refused before the stream starts


def test_cli_ask_prints_the_answer_with_citations(stack: Stack) -> None:
    from typer.testing import CliRunner

    from headwater.cli.main import app

    res = CliRunner().invoke(app, ["ask", QUESTION, "--fresh", "--config", str(stack.config)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "14 days" in lines[0] and "[1]" in lines[0]
    assert any(ln.startswith("[1] docs:refunds.md v") and "14 days" in ln for ln in lines)
    assert "cache miss" in res.output
    res = CliRunner().invoke(app, ["ask", QUESTION, "--json", "--config", str(stack.config)])
    assert res.exit_code == 0 and json.loads(res.output)["cache"] == "hit"


def test_concurrent_questions_share_model_calls_and_get_their_own_vectors(embedder: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from headwater.serving.batching import BatchingEmbedder

    texts = [f"question number {i} about refunds and parcels" for i in range(24)]
    expected = embedder.embed(texts)
    batching = BatchingEmbedder(embedder, max_batch=8)
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(lambda t: batching.embed([t])[0], texts))
    for e, g in zip(expected, got, strict=True):
        assert float(np.dot(e, g)) > 0.9999
    assert batching.calls < len(texts)


def _topic_values(rt: Runtime, topic: str) -> list[dict[str, Any]]:
    out = []
    for p in rt.log.partitions(topic):
        out += [json.loads(r.value or b"{}") for r in rt.log.read(topic, p.partition, 0, 1000)]
    return out
