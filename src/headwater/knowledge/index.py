"""Chunk-level writes to ``headwater_kb``: plain SQL on the caller's connection, so
they commit (or roll back) with the worker's offsets.

``apply_document`` makes a document's rows equal to its new chunk list: chunks whose
id is unchanged keep their row and vector (only version/ordinal move), stale chunks are
deleted, new ones are inserted with vectors from the embedding cache, computing only
the (model, text hash) pairs the cache lacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb

from headwater.knowledge.chunking import Chunk
from headwater.knowledge.embedder import Embedder
from headwater.log.base import Conn


@dataclass
class DocumentUpsert:
    doc_id: str
    source: str
    uri: str
    title: str | None
    version: int
    content_hash: str
    position: str | None
    chunks: list[Chunk]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class IndexStats:
    embedded: int = 0
    cached: int = 0
    kept: int = 0
    inserted: int = 0
    deleted: int = 0


def delete_documents(conn: Conn, doc_ids: Sequence[str]) -> int:
    """Remove documents and all their chunks; returns the chunks removed."""
    if not doc_ids:
        return 0
    cur = conn.execute("DELETE FROM headwater_kb.chunks WHERE doc_id = ANY(%s)", (list(doc_ids),))
    conn.execute("DELETE FROM headwater_kb.documents WHERE doc_id = ANY(%s)", (list(doc_ids),))
    return cur.rowcount


def _vector_literal(v: Any) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in v.tolist()) + "]"


def ensure_embeddings(conn: Conn, embedder: Embedder, chunks: Sequence[Chunk]) -> tuple[int, int]:
    """Make sure the cache holds a vector for every chunk; returns (computed, cached)."""
    wanted: dict[str, str] = {c.text_hash: c.embed_text for c in chunks}
    if not wanted:
        return 0, 0
    have = {
        r[0]
        for r in conn.execute(
            "SELECT text_hash FROM headwater_kb.embedding_cache"
            " WHERE model = %s AND text_hash = ANY(%s)",
            (embedder.model, list(wanted)),
        )
    }
    missing = [h for h in wanted if h not in have]
    if missing:
        vecs = embedder.embed([wanted[h] for h in missing])
        conn.execute(
            "INSERT INTO headwater_kb.embedding_cache (model, text_hash, embedding)"
            " SELECT %s, h, e::vector FROM unnest(%s::text[], %s::text[]) AS u(h, e)"
            " ON CONFLICT DO NOTHING",
            (embedder.model, missing, [_vector_literal(v) for v in vecs]),
        )
    return len(missing), len(have)


def apply_documents(conn: Conn, embedder: Embedder, docs: Sequence[DocumentUpsert]) -> IndexStats:
    """Upsert documents and make their chunk rows exactly their new chunk lists."""
    stats = IndexStats()
    if not docs:
        return stats
    doc_ids = [d.doc_id for d in docs]
    existing: dict[str, set[str]] = {}
    for chunk_id, doc_id in conn.execute(
        "SELECT chunk_id, doc_id FROM headwater_kb.chunks WHERE doc_id = ANY(%s)", (doc_ids,)
    ):
        existing.setdefault(doc_id, set()).add(chunk_id)
    stale: list[str] = []
    kept: list[tuple[str, int, int]] = []
    fresh: list[tuple[DocumentUpsert, Chunk]] = []
    for d in docs:
        old = existing.get(d.doc_id, set())
        new_ids = {c.chunk_id for c in d.chunks}
        stale.extend(old - new_ids)
        for c in d.chunks:
            if c.chunk_id in old:
                kept.append((c.chunk_id, d.version, c.ordinal))
            else:
                fresh.append((d, c))
    if stale:
        conn.execute("DELETE FROM headwater_kb.chunks WHERE chunk_id = ANY(%s)", (stale,))
    if kept:
        conn.execute(
            "UPDATE headwater_kb.chunks c SET version = u.v, ordinal = u.o, updated_at = now()"
            " FROM unnest(%s::text[], %s::int8[], %s::int4[]) AS u(id, v, o)"
            " WHERE c.chunk_id = u.id",
            ([k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept]),
        )
    stats.embedded, stats.cached = ensure_embeddings(conn, embedder, [c for _, c in fresh])
    if fresh:
        conn.execute(
            "INSERT INTO headwater_kb.chunks AS t (chunk_id, doc_id, version, ordinal, text,"
            " headings, metadata, embedding, tsv, text_hash, model)"
            " SELECT u.id, u.doc, u.v, u.o, u.txt, ARRAY(SELECT jsonb_array_elements_text(u.h)),"
            " u.m, e.embedding, to_tsvector('english', u.et), u.th, %s"
            " FROM unnest(%s::text[], %s::text[], %s::int8[], %s::int4[], %s::text[],"
            " %s::jsonb[], %s::jsonb[], %s::text[], %s::text[])"
            " AS u(id, doc, v, o, txt, h, m, et, th)"
            " JOIN headwater_kb.embedding_cache e ON e.model = %s AND e.text_hash = u.th"
            " ON CONFLICT (chunk_id) DO UPDATE SET version = excluded.version,"
            " ordinal = excluded.ordinal, updated_at = now()",
            (
                embedder.model,
                [c.chunk_id for _, c in fresh],
                [d.doc_id for d, _ in fresh],
                [d.version for d, _ in fresh],
                [c.ordinal for _, c in fresh],
                [c.text for _, c in fresh],
                [Jsonb(list(c.headings)) for _, c in fresh],
                [Jsonb(d.metadata) for d, _ in fresh],
                [c.embed_text for _, c in fresh],
                [c.text_hash for _, c in fresh],
                embedder.model,
            ),
        )
    conn.execute(
        "INSERT INTO headwater_kb.documents AS t (doc_id, source, uri, title, version,"
        " content_hash, position, metadata)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::int8[],"
        " %s::text[], %s::text[], %s::jsonb[])"
        " ON CONFLICT (doc_id) DO UPDATE SET source = excluded.source, uri = excluded.uri,"
        " title = excluded.title, version = excluded.version,"
        " content_hash = excluded.content_hash, position = excluded.position,"
        " metadata = excluded.metadata, updated_at = now()",
        (
            doc_ids,
            [d.source for d in docs],
            [d.uri for d in docs],
            [d.title for d in docs],
            [d.version for d in docs],
            [d.content_hash for d in docs],
            [d.position for d in docs],
            [Jsonb(d.metadata) for d in docs],
        ),
    )
    stats.kept, stats.inserted, stats.deleted = len(kept), len(fresh), len(stale)
    return stats
