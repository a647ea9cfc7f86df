"""``GET /v1/documents``: the knowledge base's documents, newest changes first, and
``GET /v1/documents/{doc_id}``: one document with its chunks.

Errors: an unknown document → 404; the database away → 503 (StorageError).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from headwater.engine.runtime import Runtime
from headwater.knowledge.documents import get_document, list_documents
from headwater.storage.database import connect


def documents_router(rt: Runtime) -> APIRouter:
    """The document routes (mount with the ``search`` scope: they read the same data)."""
    router = APIRouter(prefix="/v1/documents", tags=["knowledge"])

    @router.get("")
    def documents(
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
        source: Annotated[str | None, Query(min_length=1)] = None,
    ) -> dict[str, Any]:
        """``{"total": n, "documents": [{doc_id, source, uri, title, version, position,
        chunks, updated_at}]}``, most recently changed first."""
        with connect(rt.dsn, autocommit=True) as conn:
            docs, total = list_documents(conn, limit=limit, offset=offset, source=source)
        return {"total": total, "documents": [d.to_json() for d in docs]}

    @router.get("/{doc_id:path}")
    def document(doc_id: str) -> dict[str, Any]:
        """``{"document": {...}, "chunks": [{chunk_id, ordinal, version, headings, text,
        updated_at}]}``; 404 when the document is not indexed."""
        with connect(rt.dsn, autocommit=True) as conn:
            found = get_document(conn, doc_id)
        if found is None:
            raise HTTPException(404, "no document with that id in the knowledge base")
        doc, chunks = found
        return {"document": doc.to_json(), "chunks": [c.to_json() for c in chunks]}

    return router
