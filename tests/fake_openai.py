"""FakeOpenAI: a small local HTTP server speaking the OpenAI ``/v1/chat/completions``
protocol (plain and streamed), for testing the chat client where the real (paid, remote)
service cannot be reached. It answers from a script: fail the next N requests with a
status, stall, or reply with a fixed text split into stream chunks."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeOpenAIScript:
    reply: str = "Refunds take 5 days [1]."
    fail_next: list[int] = field(default_factory=list)
    """Statuses to answer the next requests with, one per request."""
    stall_s: float = 0.0
    retry_after: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    script: FakeOpenAIScript

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        # a client that gave up (a timeout test) is not answered
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._post()

    def _post(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.script.requests.append(body)
        self.script.auth_headers.append(self.headers.get("Authorization"))
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": "no such route"}})
            return
        if self.script.fail_next:
            status = self.script.fail_next.pop(0)
            headers = {"Retry-After": self.script.retry_after} if self.script.retry_after else {}
            self._json(status, {"error": {"message": f"scripted failure {status}"}}, headers)
            return
        if self.script.stall_s:
            time.sleep(self.script.stall_s)
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            words = self.script.reply.split(" ")
            for i, w in enumerate(words):
                piece = w if i == 0 else " " + w
                chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            return
        self._json(
            200,
            {
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": self.script.reply}}
                ]
            },
        )

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def fake_openai(script: FakeOpenAIScript) -> Iterator[str]:
    """Run FakeOpenAI on a free loopback port; yields its base URL (``.../v1``)."""
    handler = type("Handler", (_Handler,), {"script": script})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
