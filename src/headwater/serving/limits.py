"""Request body size limit (ASGI middleware): 413 before the body is read into memory.

A declared ``Content-Length`` over the limit is refused before any byte of the body is
read; a chunked body is counted as it streams and refused as soon as it passes the
limit. Either way the server holds at most ``max_bytes`` of a request.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]


class _TooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _reply(send, 400, "Content-Length is not a number")
                return
            if size > self.max_bytes:
                await _reply(send, 413, self._message())
                return
        seen = 0
        started = replied = False

        async def counted_receive() -> Message:
            nonlocal seen, replied
            msg: Message = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    # Answer now: frameworks turn errors raised while reading the body
                    # into their own 400, which tracked_send then drops.
                    if not started and not replied:
                        replied = True
                        await _reply(send, 413, self._message())
                    raise _TooLarge
            return msg

        async def tracked_send(msg: Message) -> None:
            nonlocal started
            if replied:
                return
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, counted_receive, tracked_send)

    def _message(self) -> str:
        return f"request body larger than {self.max_bytes} bytes (serving.max_body_bytes)"


async def _reply(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
