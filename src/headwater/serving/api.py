"""``POST /v1/ask`` and ``POST /v1/feedback``, and what guards every ``/v1`` route:
API keys (:mod:`.auth`), the body size limit (:mod:`.limits`), 4xx with a message.

Errors: malformed JSON or fields → 422 with FastAPI's per-field detail; a body over
``serving.max_body_bytes`` → 413; no or an unknown key → 401; a key without the
route's scope → 403; feedback for an unknown conversation → 404; a database, source
or model that cannot answer → 503 with the reason.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from headwater.engine.runtime import Runtime
from headwater.errors import HeadwaterError
from headwater.serving.ask import AskQuery, AskService, BadRequest
from headwater.serving.auth import KeyRing, Principal, check_exposure, require_scope
from headwater.serving.generators import build_generator
from headwater.serving.limits import BodyLimit

log = logging.getLogger(__name__)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class AskRequest(_Body):
    question: str = Field(min_length=1, max_length=4000)
    customer_id: str | None = Field(None, min_length=1, max_length=256)
    """Any id of the customer: person id, alias, email, phone, source record id."""
    k: int | None = Field(None, ge=1, le=100)
    consistency: Literal["latest", "fresh"] = "latest"
    """``fresh``: wait until the stores reflect every write committed before the call."""
    cache: Literal["use", "bypass"] = "use"
    stream: bool = False
    """Server-sent events: ``delta`` events with pieces of the answer as the generator
    writes them, then one ``answer`` event with the whole response."""


class Citation(BaseModel):
    doc_id: str
    chunk_id: str
    version: int
    source: str
    text: str


class AskResponse(BaseModel):
    answer: str
    citations: list[Citation]
    profile_fields: dict[str, str]
    as_of: dict[str, str | None]
    """Per pipeline: the source position up to which it had applied its input."""
    cache: Literal["hit", "miss", "bypass"]
    conversation_id: str
    timings_ms: dict[str, float]
    stale: bool | None = None
    """Only with ``consistency: "fresh"``: true when the wait timed out."""


class FeedbackRequest(_Body):
    conversation_id: str = Field(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )
    rating: int = Field(ge=1, le=5)
    """1 (bad) to 5 (good); a thumbs down / up is 1 / 5."""
    comment: str | None = Field(None, max_length=4000)


class FeedbackResponse(BaseModel):
    conversation_id: str
    accepted: bool


def ask_router(rt: Runtime, service: Any = None) -> APIRouter:
    """The routes. Without ``service``, the :class:`AskService` is made at once and its
    model loaded in the background when the config has a knowledge base, else on the
    first question.

    Raises:
        ConfigError: the generator cannot be configured (e.g. its key is unset).
    """
    router = APIRouter(prefix="/v1", tags=["ask"])
    lock = threading.Lock()
    state: dict[str, AskService] = {}
    generator = build_generator(rt.settings.serving.generator) if service is None else None
    if service is not None:
        state["s"] = service

    def svc() -> AskService:
        with lock:
            if "s" not in state:
                state["s"] = AskService(rt, generator=generator)
            return state["s"]

    if service is None and any(p.processor == "knowledge" for p in rt.settings.all_pipelines()):
        threading.Thread(target=_warm, args=(lambda: svc().embedder,), daemon=True).start()

    @router.post("/ask", response_model=AskResponse, response_model_exclude_none=True)
    def ask(body: AskRequest, who: Annotated[Principal, Depends(require_scope("ask"))]) -> Any:
        """Answer a question from the knowledge base and the customer's profile, with
        citations, the watermarks it was computed at, and whether the cache served it.
        With ``stream: true``: ``text/event-stream`` of ``delta`` events, then ``answer``."""
        query = AskQuery(**body.model_dump(exclude={"stream"}))
        if not body.stream:
            return svc().ask(query, who)
        events = svc().ask_stream(query, who)
        first = next(events)  # checks and retrieval happen here: errors are still 4xx/503
        return StreamingResponse(_sse(first, events), media_type="text/event-stream")

    @router.post("/feedback", response_model=FeedbackResponse)
    def feedback(
        body: FeedbackRequest, who: Annotated[Principal, Depends(require_scope("feedback"))]
    ) -> dict[str, Any]:
        """Rate an answer; appended to the ``feedback`` topic."""
        return svc().feedback(body.conversation_id.lower(), body.rating, body.comment, who)

    return router


def _sse(
    first: tuple[str, dict[str, Any]], rest: Iterator[tuple[str, dict[str, Any]]]
) -> Iterator[str]:
    yield f"event: {first[0]}\ndata: {json.dumps(first[1])}\n\n"
    try:
        for name, data in rest:
            yield f"event: {name}\ndata: {json.dumps(data)}\n\n"
    except HeadwaterError as exc:  # the model failed mid-answer: say so in the stream
        log.warning("POST /v1/ask (stream): %s", exc)
        yield f"event: error\ndata: {json.dumps({'detail': str(exc)})}\n\n"


def _warm(load: Any) -> None:
    try:
        load()
    except Exception as exc:  # the first request will report it
        log.warning("serving: warm-up failed: %s", exc)


def install(app: FastAPI, rt: Runtime, service: Any = None) -> None:
    """Keys, the body limit, error mapping and the ask/feedback routes on ``app``.

    Raises:
        ConfigError: an open API on a non-loopback ``server.host``, or a key's
            environment variable is unset.
    """
    ring = KeyRing.from_config(rt.settings.serving.auth)
    check_exposure(rt.settings, ring)
    app.state.keyring = ring
    app.add_middleware(BodyLimit, max_bytes=rt.settings.serving.max_body_bytes)

    @app.exception_handler(BadRequest)
    def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(HeadwaterError)
    def unavailable(request: Request, exc: HeadwaterError) -> JSONResponse:
        """A store, source or model that cannot answer now (messages hold no secrets)."""
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=503)

    app.include_router(ask_router(rt, service))
