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
from headwater.knowledge.embedder import Embedder, vector_literal
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


def _missing_embeddings(
    embedder: Embedder, chunks: Sequence[Chunk], cached: set[str]
) -> dict[str, str]:
    """Vectors (as pgvector literals) computed now for the chunks whose text hash is
    not ``cached``."""
    wanted = {c.text_hash: c.embed_text for c in chunks if c.text_hash not in cached}
    if not wanted:
        return {}
    vecs = embedder.embed(list(wanted.values()))
    return {h: vector_literal(v) for h, v in zip(wanted, vecs, strict=True)}


# One statement (one round trip): new vectors into the cache, the documents upserted,
# the new chunks inserted with their vector (computed now, else from the cache).
_WRITE = (
    "WITH cache AS (INSERT INTO headwater_kb.embedding_cache (model, text_hash, embedding)"
    " SELECT %(model)s, h, e::vector FROM unnest(%(new_h)s::text[], %(new_e)s::text[])"
    " AS u(h, e) ON CONFLICT DO NOTHING),"
    " docs AS (INSERT INTO headwater_kb.documents AS t (doc_id, source, uri, title, version,"
    " content_hash, position, metadata)"
    " SELECT * FROM unnest(%(d_id)s::text[], %(d_source)s::text[], %(d_uri)s::text[],"
    " %(d_title)s::text[], %(d_version)s::int8[], %(d_hash)s::text[], %(d_pos)s::text[],"
    " %(d_meta)s::jsonb[])"
    " ON CONFLICT (doc_id) DO UPDATE SET source = excluded.source, uri = excluded.uri,"
    " title = excluded.title, version = excluded.version,"
    " content_hash = excluded.content_hash, position = excluded.position,"
    " metadata = excluded.metadata, updated_at = now())"
    " INSERT INTO headwater_kb.chunks AS t (chunk_id, doc_id, version, ordinal, text,"
    " headings, metadata, embedding, tsv, text_hash, model)"
    " SELECT u.id, u.doc, u.v, u.o, u.txt, ARRAY(SELECT jsonb_array_elements_text(u.h)),"
    " u.m, coalesce(u.e::vector, e.embedding), to_tsvector('english', u.et), u.th, %(model)s"
    " FROM unnest(%(c_id)s::text[], %(c_doc)s::text[], %(c_version)s::int8[],"
    " %(c_ordinal)s::int4[], %(c_text)s::text[], %(c_headings)s::jsonb[],"
    " %(c_meta)s::jsonb[], %(c_embed_text)s::text[], %(c_hash)s::text[], %(c_vec)s::text[])"
    " AS u(id, doc, v, o, txt, h, m, et, th, e)"
    " LEFT JOIN headwater_kb.embedding_cache e ON e.model = %(model)s AND e.text_hash = u.th"
    " ON CONFLICT (chunk_id) DO UPDATE SET version = excluded.version,"
    " ordinal = excluded.ordinal, updated_at = now()"
)


def apply_documents(conn: Conn, embedder: Embedder, docs: Sequence[DocumentUpsert]) -> IndexStats:
    """Upsert documents and make their chunk rows exactly their new chunk lists."""
    stats = IndexStats()
    if not docs:
        return stats
    doc_ids = [d.doc_id for d in docs]
    hashes = list({c.text_hash for d in docs for c in d.chunks})
    with conn.pipeline():  # both lookups in one round trip
        rows = conn.execute(
            "SELECT chunk_id, doc_id FROM headwater_kb.chunks WHERE doc_id = ANY(%s)",
            (doc_ids,),
        )
        hits = conn.execute(
            "SELECT text_hash FROM headwater_kb.embedding_cache"
            " WHERE model = %s AND text_hash = ANY(%s)",
            (embedder.model, hashes),
        )
        existing: dict[str, set[str]] = {}
        for chunk_id, doc_id in rows.fetchall():
            existing.setdefault(doc_id, set()).add(chunk_id)
        cached = {r[0] for r in hits.fetchall()}
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
    new = _missing_embeddings(embedder, [c for _, c in fresh], cached)
    stats.embedded = len(new)
    stats.cached = len({c.text_hash for _, c in fresh} - set(new))
    conn.execute(
        _WRITE,
        {
            "model": embedder.model,
            "new_h": list(new),
            "new_e": list(new.values()),
            "d_id": doc_ids,
            "d_source": [d.source for d in docs],
            "d_uri": [d.uri for d in docs],
            "d_title": [d.title for d in docs],
            "d_version": [d.version for d in docs],
            "d_hash": [d.content_hash for d in docs],
            "d_pos": [d.position for d in docs],
            "d_meta": [Jsonb(d.metadata) for d in docs],
            "c_id": [c.chunk_id for _, c in fresh],
            "c_doc": [d.doc_id for d, _ in fresh],
            "c_version": [d.version for d, _ in fresh],
            "c_ordinal": [c.ordinal for _, c in fresh],
            "c_text": [c.text for _, c in fresh],
            "c_headings": [Jsonb(list(c.headings)) for _, c in fresh],
            "c_meta": [Jsonb(d.metadata) for d, _ in fresh],
            "c_embed_text": [c.embed_text for _, c in fresh],
            "c_hash": [c.text_hash for _, c in fresh],
            "c_vec": [new.get(c.text_hash) for _, c in fresh],
        },
    )
    stats.kept, stats.inserted, stats.deleted = len(kept), len(fresh), len(stale)
    return stats
