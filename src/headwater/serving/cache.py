"""The semantic cache: earlier answers keyed by the question's embedding (pgvector).

Scope. An entry is looked up only within its tenant (the API key's), its ``params``
(generator, k, embedder) and its customer scope: ``""`` for an answer made without a
profile, else the ``person_id`` whose profile it was given. A request for a customer
with a profile only sees that person's entries, so one customer's answer never reaches
another.

Invalidation (migration 0030). Each entry records the chunks and document versions it
was given and the profile version it used. Triggers on ``headwater_kb.chunks`` (any
insert, update or delete of a chunk of a used document) and on
``headwater_profiles.profiles`` (any change of the used person) delete the entry in the
same transaction as the change. ``ttl_s`` is the backstop.

Race with a pipeline (:func:`store`): the entry is written in a transaction that first
takes ``FOR SHARE NOWAIT`` locks on the used documents, chunks and profile and checks
their versions are still those the answer was made from. A pipeline transaction that
changed them and committed shows as a version mismatch; one still open holds its row
lock, so NOWAIT fails; one that starts after waits for our commit and its trigger then
deletes the entry. In each case no stale entry survives; the answer is just not cached.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.errors

from headwater.knowledge.embedder import vector_literal
from headwater.log.base import Conn

if TYPE_CHECKING:  # numpy is imported where used: the server starts without it
    import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Use:
    """A chunk an answer was given, with the versions it saw."""

    chunk_id: str
    chunk_version: int
    doc_id: str
    doc_version: int


@dataclass(frozen=True)
class Hit:
    entry_id: int
    similarity: float
    question: str
    response: dict[str, Any]


def lookup(
    conn: Conn,
    *,
    tenant: str,
    scope: str,
    params: str,
    embedding: np.ndarray,
    threshold: float,
) -> Hit | None:
    """The most similar live entry in this scope if its similarity is ≥ ``threshold``."""
    with conn.transaction():
        conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
        row = conn.execute(
            "SELECT entry_id, 1 - (embedding <=> %s::vector), question, response"
            " FROM headwater_serving.cache_entries"
            " WHERE tenant = %s AND scope = %s AND params = %s AND expires_at > now()"
            " ORDER BY embedding <=> %s::vector LIMIT 1",
            (vector_literal(embedding), tenant, scope, params, vector_literal(embedding)),
        ).fetchone()
        if row is None or float(row[1]) < threshold:
            return None
        conn.execute(
            "UPDATE headwater_serving.cache_entries SET hits = hits + 1, last_hit_at = now()"
            " WHERE entry_id = %s",
            (row[0],),
        )
    return Hit(int(row[0]), float(row[1]), str(row[2]), dict(row[3]))


def lookup_exact(conn: Conn, *, tenant: str, scope: str, params: str, question: str) -> Hit | None:
    """A live entry for exactly this question (no embedding needed)."""
    with conn.transaction():
        row = conn.execute(
            "SELECT entry_id, question, response FROM headwater_serving.cache_entries"
            " WHERE tenant = %s AND scope = %s AND params = %s AND md5(question) = md5(%s)"
            " AND question = %s AND expires_at > now() ORDER BY entry_id DESC LIMIT 1",
            (tenant, scope, params, question, question),
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "UPDATE headwater_serving.cache_entries SET hits = hits + 1, last_hit_at = now()"
            " WHERE entry_id = %s",
            (row[0],),
        )
    return Hit(int(row[0]), 1.0, str(row[1]), dict(row[2]))


def store(
    conn: Conn,
    *,
    tenant: str,
    scope: str,
    params: str,
    question: str,
    embedding: np.ndarray,
    response: dict[str, Any],
    uses: Sequence[Use],
    person_id: str | None,
    profile_version: int | None,
    ttl_s: int,
) -> int | None:
    """Cache an answer if what it used is still current; its id, or None when it was not
    cached (something it used changed, or is being changed right now)."""
    try:
        with conn.transaction():
            if not _still_current(conn, uses, person_id, profile_version):
                return None
            row = conn.execute(
                "INSERT INTO headwater_serving.cache_entries (tenant, scope, params, question,"
                " embedding, response, person_id, profile_version, expires_at)"
                " VALUES (%s, %s, %s, %s, %s::vector, %s::jsonb, %s, %s,"
                " now() + make_interval(secs => %s)) RETURNING entry_id",
                (
                    tenant,
                    scope,
                    params,
                    question,
                    vector_literal(embedding),
                    json.dumps(response),
                    person_id,
                    profile_version,
                    ttl_s,
                ),
            ).fetchone()
            assert row is not None
            if uses:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO headwater_serving.cache_uses"
                        " (entry_id, chunk_id, chunk_version, doc_id, doc_version)"
                        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        [
                            (row[0], u.chunk_id, u.chunk_version, u.doc_id, u.doc_version)
                            for u in uses
                        ],
                    )
            conn.execute(
                "DELETE FROM headwater_serving.cache_entries WHERE entry_id IN"
                " (SELECT entry_id FROM headwater_serving.cache_entries"
                "  WHERE expires_at < now() LIMIT 100)"
            )
            return int(row[0])
    except psycopg.errors.LockNotAvailable:
        log.debug("cache: a used row is being changed; answer not cached")
        return None


def _still_current(
    conn: Conn, uses: Sequence[Use], person_id: str | None, profile_version: int | None
) -> bool:
    if uses:
        docs = sorted({(u.doc_id, u.doc_version) for u in uses})
        rows = conn.execute(
            "SELECT doc_id, version FROM headwater_kb.documents WHERE doc_id = ANY(%s)"
            " ORDER BY doc_id FOR SHARE NOWAIT",
            ([d for d, _ in docs],),
        ).fetchall()
        if sorted((str(d), int(v)) for d, v in rows) != docs:
            return False
        chunks = sorted({(u.chunk_id, u.chunk_version) for u in uses})
        rows = conn.execute(
            "SELECT chunk_id, version FROM headwater_kb.chunks WHERE chunk_id = ANY(%s)"
            " ORDER BY chunk_id FOR SHARE NOWAIT",
            ([c for c, _ in chunks],),
        ).fetchall()
        if sorted((str(c), int(v)) for c, v in rows) != chunks:
            return False
    if person_id is not None:
        row = conn.execute(
            "SELECT version FROM headwater_profiles.profiles WHERE person_id = %s FOR SHARE NOWAIT",
            (person_id,),
        ).fetchone()
        if row is None or int(row[0]) != profile_version:
            return False
    return True


def attach_invalidation(conn: Conn) -> int:
    """Attach the invalidation triggers to knowledge-base and profile tables created
    after migration 0030 (idempotent; takes no lock when they are attached)."""
    row = conn.execute("SELECT headwater_serving.attach_invalidation()").fetchone()
    return int(row[0]) if row else 0


def clear(conn: Conn, tenant: str | None = None) -> int:
    """Delete every entry (of ``tenant``); returns how many."""
    cur = conn.execute(
        "DELETE FROM headwater_serving.cache_entries WHERE %s::text IS NULL OR tenant = %s",
        (tenant, tenant),
    )
    return cur.rowcount
