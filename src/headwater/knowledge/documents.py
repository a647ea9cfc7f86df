"""Reading the knowledge base document by document: what is indexed, how many chunks
each document has, and what changed last.

Reads only committed rows of ``headwater_kb`` (written by the knowledge processor in its
batches' transactions), so a document and its chunks are always seen at one version.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from headwater.log.base import Conn


@dataclass(frozen=True)
class DocumentSummary:
    """One indexed document: its source version, chunk count and last change time."""

    doc_id: str
    source: str
    uri: str
    title: str | None
    version: int
    position: str | None
    """The source position the document was indexed at."""
    chunks: int
    updated_at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "source": self.source,
            "uri": self.uri,
            "title": self.title,
            "version": self.version,
            "position": self.position,
            "chunks": self.chunks,
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class ChunkView:
    """One chunk of a document, in document order."""

    chunk_id: str
    ordinal: int
    version: int
    headings: tuple[str, ...]
    text: str
    updated_at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "ordinal": self.ordinal,
            "version": self.version,
            "headings": list(self.headings),
            "text": self.text,
            "updated_at": self.updated_at.isoformat(),
        }


_SUMMARY = (
    "SELECT d.doc_id, d.source, d.uri, d.title, d.version, d.position,"
    " (SELECT count(*) FROM headwater_kb.chunks c WHERE c.doc_id = d.doc_id)::int,"
    " d.updated_at FROM headwater_kb.documents d"
)


def list_documents(
    conn: Conn, *, limit: int = 50, offset: int = 0, source: str | None = None
) -> tuple[list[DocumentSummary], int]:
    """Documents, most recently changed first (ties by ``doc_id``), and how many there
    are in all (with ``source``: in that source)."""
    where, params = ("WHERE d.source = %(source)s", {"source": source}) if source else ("", {})
    rows = conn.execute(
        f"{_SUMMARY} {where} ORDER BY d.updated_at DESC, d.doc_id"
        " LIMIT %(limit)s OFFSET %(offset)s",
        {**params, "limit": limit, "offset": offset},
    ).fetchall()
    total = conn.execute(
        f"SELECT count(*) FROM headwater_kb.documents d {where}", params
    ).fetchone()
    return [DocumentSummary(*r) for r in rows], int(total[0]) if total else 0


def get_document(conn: Conn, doc_id: str) -> tuple[DocumentSummary, list[ChunkView]] | None:
    """A document and its chunks in document order; None when it is not indexed."""
    row = conn.execute(f"{_SUMMARY} WHERE d.doc_id = %s", (doc_id,)).fetchone()
    if row is None:
        return None
    chunks = conn.execute(
        "SELECT chunk_id, ordinal, version, headings, text, updated_at"
        " FROM headwater_kb.chunks WHERE doc_id = %s ORDER BY ordinal, chunk_id",
        (doc_id,),
    ).fetchall()
    return DocumentSummary(*row), [
        ChunkView(c[0], c[1], c[2], tuple(c[3]), c[4], c[5]) for c in chunks
    ]
