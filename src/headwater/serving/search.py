"""``GET /v1/search?q=...&k=...``: hybrid search over the knowledge base."""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Query

from headwater.engine.runtime import Runtime
from headwater.storage.database import connect


def search_router(rt: Runtime) -> APIRouter:
    """The search routes; the embedder is loaded on the first request."""
    router = APIRouter(prefix="/v1")
    lock = threading.Lock()
    state: dict[str, Any] = {}

    def embedder() -> Any:
        with lock:
            if "e" not in state:
                from headwater.knowledge.embedder import load_embedder

                state["e"] = load_embedder(rt.settings.knowledge.embedder)
            return state["e"]

    @router.get("/search")
    def search(
        q: Annotated[str, Query(min_length=1, max_length=2000)],
        k: Annotated[int, Query(ge=1, le=100)] = 5,
        source: str | None = None,
    ) -> dict[str, Any]:
        """Chunks best matching ``q``: ``{"hits": [{doc_id, uri, chunk_id, version,
        score, text, title, headings, source}]}``."""
        from headwater.knowledge.search import search as run_search

        with connect(rt.dsn) as conn:
            hits = run_search(
                conn, embedder(), q, k=k, filters={"source": source} if source else None
            )
        return {"hits": [h.to_json() for h in hits]}

    return router
