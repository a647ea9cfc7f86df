"""The OpenAI-compatible embeddings client against FakeEmbeddingsServer, a small local
HTTP server (a paid embeddings API cannot run here): batching, the concurrency cap,
rate limit, retries with backoff on 429/5xx, timeouts, and refusals."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from headwater.config.knowledge import EmbedderConfig
from headwater.errors import ProcessingError, RetryableError
from headwater.knowledge.remote import OpenAIEmbedder


class FakeEmbeddingsServer(ThreadingHTTPServer):
    """Answers POST /v1/embeddings with deterministic vectors; ``script`` holds the
    status codes (or "sleep") of the next responses before it answers normally."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[int | str] = []
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.times: list[float] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeEmbeddingsServer

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.requests.append(body)
            srv.auth.append(self.headers.get("Authorization"))
            srv.times.append(time.monotonic())
            step = srv.script.pop(0) if srv.script else 200
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            time.sleep(0.05)
            if step == "sleep":
                time.sleep(1.0)
            if step != 200 and step != "sleep":
                self.send_response(int(step))
                if step == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                return
            data = [
                {"index": i, "embedding": [float(len(t)), 1.0, 0.0, float(i)]}
                for i, t in enumerate(body["input"])
            ]
            payload = json.dumps({"data": data[::-1], "model": body["model"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        finally:
            with srv.lock:
                srv.in_flight -= 1


@pytest.fixture
def fake() -> Iterator[FakeEmbeddingsServer]:
    srv = FakeEmbeddingsServer()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _cfg(fake: FakeEmbeddingsServer, **kw: Any) -> EmbedderConfig:
    base: dict[str, Any] = {
        "kind": "openai",
        "url": fake.url,
        "model": "fake-4d",
        "dim": 4,
        "batch_size": 2,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "api_key": SecretStr("sk-test-secret"),
    }
    return EmbedderConfig(**(base | kw))


def test_batches_in_parallel_under_the_cap_in_input_order(fake: FakeEmbeddingsServer) -> None:
    emb = OpenAIEmbedder(_cfg(fake, max_concurrency=2))
    texts = [f"text {'x' * i}" for i in range(9)]
    vecs = emb.embed(texts)
    assert vecs.shape == (9, 4) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0)
    # row i belongs to texts[i]: first component ∝ its length (index within batch varies)
    raw0 = np.array([len(texts[0]), 1.0, 0.0, 0.0])
    assert np.allclose(vecs[0], raw0 / np.linalg.norm(raw0))
    assert [len(r["input"]) for r in fake.requests] == [2, 2, 2, 2, 1]
    assert fake.max_in_flight == 2
    assert fake.auth[0] == "Bearer sk-test-secret"


def test_retries_429_and_5xx_with_backoff_then_succeeds(fake: FakeEmbeddingsServer) -> None:
    fake.script = [429, 503, 500]
    emb = OpenAIEmbedder(_cfg(fake, max_concurrency=1, max_retries=3))
    assert emb.embed(["a"]).shape == (1, 4)
    assert emb.requests == 4


def test_gives_up_as_retryable_and_hides_the_key(fake: FakeEmbeddingsServer) -> None:
    fake.script = [503] * 10
    emb = OpenAIEmbedder(_cfg(fake, max_retries=2))
    with pytest.raises(RetryableError, match=r"HTTP 503.*3 attempts") as exc:
        emb.embed(["a"])
    assert "sk-test-secret" not in str(exc.value)


def test_timeout_is_transient_and_bad_input_is_dead_lettered(fake: FakeEmbeddingsServer) -> None:
    fake.script = ["sleep"]
    emb = OpenAIEmbedder(_cfg(fake, timeout_s=0.3, max_retries=1))
    t0 = time.monotonic()
    assert emb.embed(["a"]).shape == (1, 4)  # first attempt timed out, retry answered
    assert time.monotonic() - t0 < 1.0 and emb.requests == 2
    fake.script = [400]
    with pytest.raises(ProcessingError, match="HTTP 400"):
        emb.embed(["too long"])


def test_rate_limit_spaces_requests(fake: FakeEmbeddingsServer) -> None:
    emb = OpenAIEmbedder(_cfg(fake, max_concurrency=4, requests_per_s=20, batch_size=1))
    emb.embed([str(i) for i in range(6)])
    span = max(fake.times) - min(fake.times)
    assert span >= 5 / 20 * 0.9
