"""Answering a question: freshness → profile → cache → embed → cache → retrieve →
generate → cache → conversation log.

Steps of :meth:`AskService.ask` (numbered; the guarantees rest on this order):

1. ``consistency: "fresh"``: wait until the pipelines the answer depends on reflect
   every source write committed before the request (:mod:`.freshness`); after
   ``serving.freshness.timeout_s`` go on and mark the answer ``stale``.
2. Resolve the customer's profile (any id, alias or identifier → person). The cache
   scope is that ``person_id``, or ``""`` without a profile.
3. Cache lookup of the very same question in (tenant, scope, params): no embedding.
   A hit is an entry no change has touched: the triggers of migration 0030 delete
   entries in the changing transaction.
4. Embed the question (once; retrieval reuses the vector). Concurrent requests share
   model calls (:mod:`.batching`).
5. Cache lookup by similarity (``serving.cache.threshold``) in the same scope.
6. Retrieve in one REPEATABLE READ snapshot: profile, hybrid search, each chunk's
   cosine to the question and its document version; build the prompt within the
   token budget.
7. Generate, holding no database connection (a remote model may take seconds).
8. Cache the answer with what it used (not when nothing relevant was found), unless
   something it used changed meanwhile (:func:`.cache.store`).
9. Append the conversation to the ``conversations`` topic (and register its id, so
   feedback can name it), in one transaction on the postgres log.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from headwater.engine.runtime import Runtime
from headwater.errors import HeadwaterError
from headwater.knowledge.embedder import vector_literal
from headwater.log.base import Conn, Record
from headwater.serving import cache, freshness
from headwater.serving.auth import Principal
from headwater.serving.batching import BatchingEmbedder
from headwater.serving.generators import Generation, Generator, build_generator
from headwater.serving.prompt import Fact, Passage, Prompt, build_prompt
from headwater.storage.database import connect

if TYPE_CHECKING:  # numpy is imported where used: the server starts without it
    import numpy as np

CONVERSATIONS = "conversations"
FEEDBACK = "feedback"
_MAX_FACTS = 60


class BadRequest(HeadwaterError):
    """The request is well-formed JSON but cannot be served as asked (→ HTTP 4xx)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AskQuery:
    question: str
    customer_id: str | None = None
    k: int | None = None
    consistency: Literal["latest", "fresh"] = "latest"
    cache: Literal["use", "bypass"] = "use"


class Pool:
    """A fixed-size pool of autocommit connections (one per concurrent request)."""

    def __init__(self, dsn: str, size: int) -> None:
        self.dsn = dsn
        self._free: queue.LifoQueue[Conn] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        self._slots.acquire()
        try:
            try:
                conn = self._free.get_nowait()
            except queue.Empty:
                conn = connect(self.dsn, autocommit=True, application_name="headwater-api")
            try:
                yield conn
            except BaseException:
                conn.close()  # state unknown: do not reuse
                raise
            if conn.closed or conn.broken or conn.info.transaction_status != 0:
                conn.close()
            else:
                self._free.put(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        while True:
            try:
                self._free.get_nowait().close()
            except queue.Empty:
                return


class _OneVector:
    """An embedder that answers one known text from memory (retrieval reuses the
    question's vector instead of embedding it twice)."""

    def __init__(self, inner: Any, text: str, vector: np.ndarray) -> None:
        self.inner, self.text, self.vector = inner, text, vector
        self.model: str = inner.model
        self.dim: int = inner.dim

    def embed(self, texts: Sequence[str]) -> Any:
        if list(texts) == [self.text]:
            return self.vector[None, :]
        return self.inner.embed(texts)


def flatten_profile(doc: dict[str, Any], prefix: str = "") -> list[Fact]:
    """Profile JSON as ``field: value`` facts (nested keys joined with dots)."""
    out: list[Fact] = []
    for key, value in doc.items():
        if str(key).startswith("_") or len(out) >= _MAX_FACTS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(flatten_profile(value, name + "."))
        elif isinstance(value, list):
            if all(not isinstance(v, dict | list) for v in value):
                if value:
                    out.append(Fact(name, ", ".join(str(v) for v in value[:10])))
            else:
                for i, v in enumerate(value[:3]):
                    if isinstance(v, dict):
                        out.extend(flatten_profile(v, f"{name}.{i}."))
        elif value is not None and value != "":
            out.append(Fact(name, str(value)))
    return out[:_MAX_FACTS]


_PROFILE_SKIP = frozenset({"person_id", "records", "aliases", "recent_changes", "changes"})


def profile_facts(doc: dict[str, Any]) -> list[Fact]:
    """The facts of a profile document: its attributes (``{name: {value, source}}``) as
    ``name: value``, identifiers as ``kind: value``, then the rest flattened
    (``facts.bookings.count: 3``). Bookkeeping (records, aliases) is left out."""
    out: list[Fact] = []
    attrs = doc.get("attributes")
    if isinstance(attrs, dict):
        for name, v in attrs.items():
            value = v.get("value") if isinstance(v, dict) and "value" in v else v
            if value is not None and value != "":
                out.append(Fact(str(name), str(value)))
    idents = doc.get("identifiers")
    if isinstance(idents, list):
        for i in idents:
            if isinstance(i, dict) and "kind" in i and "value" in i:
                out.append(Fact(str(i["kind"]), str(i["value"])))
    rest = {
        k: v
        for k, v in doc.items()
        if k not in _PROFILE_SKIP
        and not (k == "attributes" and isinstance(attrs, dict))
        and not (k == "identifiers" and isinstance(idents, list))
    }
    return (out + flatten_profile(rest))[:_MAX_FACTS]


def _changes(profile: Any, updated_at: Any) -> list[str]:
    """The profile's recent changes for the prompt: its own list when it has one, else
    when it last changed (version, time) and the source position each source reached."""
    raw = profile.profile.get("recent_changes") or profile.profile.get("changes")
    if isinstance(raw, list) and raw:
        return [c if isinstance(c, str) else json.dumps(c, default=str) for c in raw[:10]]
    out = []
    if updated_at is not None:
        out.append(f"profile version {profile.version}, last changed {updated_at.isoformat()}")
    for source, position in sorted((profile.as_of or {}).items())[:10]:
        out.append(f"{source}: applied up to {json.dumps(position, default=str)}")
    return out


@dataclass
class _Turn:
    """One question on its way through :class:`AskService`."""

    q: AskQuery
    who: Principal
    question: str
    t0: float = field(default_factory=time.perf_counter)
    t: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    stale: bool | None = None
    vec: Any = None
    params: str = ""
    use_cache: bool = False
    scope: str = ""
    hit: cache.Hit | None = None
    prompt: Prompt | None = None
    profile: Any = None

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round((now - (self.t or self.t0)) * 1000, 2)
        self.t = now


class AskService:
    """What ``POST /v1/ask`` and ``headwater ask`` run. Thread-safe."""

    def __init__(
        self,
        rt: Runtime,
        *,
        embedder: Any = None,
        generator: Generator | None = None,
        pool_size: int = 16,
    ) -> None:
        self.rt = rt
        self.cfg = rt.settings.serving
        self._embedder = BatchingEmbedder(embedder) if embedder is not None else None
        self._lock = threading.Lock()
        self.generator = generator or build_generator(self.cfg.generator)
        self.pool = Pool(rt.dsn, pool_size)
        self.pipelines = freshness.dependent_pipelines(rt.settings)
        with self.pool.connection() as conn:
            cache.attach_invalidation(conn)

    @property
    def embedder(self) -> Any:
        with self._lock:
            if self._embedder is None:
                from headwater.knowledge.embedder import load_embedder

                self._embedder = BatchingEmbedder(
                    load_embedder(self.rt.settings.knowledge.embedder)
                )
            return self._embedder

    def close(self) -> None:
        self.pool.close()

    # -- ask ------------------------------------------------------------------------

    def ask(self, q: AskQuery, who: Principal) -> dict[str, Any]:
        """Answer ``q`` for ``who`` (see the module docstring for the steps).

        Raises:
            BadRequest: ``k`` above ``serving.max_k``, or an empty question.
        """
        turn = self._prepare(q, who)
        if turn.hit is not None:
            return self._finish(turn, dict(turn.hit.response), [], False)
        assert turn.prompt is not None
        gen = self.generator.generate(turn.prompt)
        turn.lap("generate")
        return self._finish(turn, *self._body(turn.prompt, gen))

    def ask_stream(self, q: AskQuery, who: Principal) -> Iterator[tuple[str, dict[str, Any]]]:
        """As :meth:`ask`, as events: ``("delta", {"text"})`` while the answer is
        written, then ``("answer", response)``. The checks (BadRequest) and steps 1-6
        run at the first ``next()``."""
        turn = self._prepare(q, who)
        if turn.hit is not None:
            yield "delta", {"text": turn.hit.response["answer"]}
            yield "answer", self._finish(turn, dict(turn.hit.response), [], False)
            return
        assert turn.prompt is not None
        pieces: list[str] = []
        for piece in self.generator.stream(turn.prompt):
            pieces.append(piece)
            yield "delta", {"text": piece}
        gen = self.generator.generation(turn.prompt, "".join(pieces))
        turn.lap("generate")
        yield "answer", self._finish(turn, *self._body(turn.prompt, gen))

    def _prepare(self, q: AskQuery, who: Principal) -> _Turn:
        """Steps 1-6: checks, freshness, profile, cache lookups, embedding, retrieval."""
        import numpy as np

        question = " ".join(q.question.split())
        if not question:
            raise BadRequest("question is empty")
        k = q.k or self.cfg.k
        if k > self.cfg.max_k:
            raise BadRequest(f"k = {k} is above the limit {self.cfg.max_k} (serving.max_k)")
        turn = _Turn(q, who, question)
        if q.consistency == "fresh":  # 1
            with self.pool.connection() as conn:
                fr = freshness.wait_fresh(
                    self.rt.settings,
                    conn,
                    self.rt.log,
                    self.pipelines,
                    timeout_s=self.cfg.freshness.timeout_s,
                    poll_s=self.cfg.freshness.poll_ms / 1000,
                )
            turn.stale = not fr.caught_up
            turn.lap("freshness")
        emb = self.embedder
        turn.params = f"{self.generator.name}|k={k}|{emb.model}|{self.cfg.prompt_tokens}"
        turn.use_cache = self.cfg.cache.enabled and q.cache == "use"
        with self.pool.connection() as conn:
            profile = self._profile(conn, q.customer_id)  # 2
            turn.scope = profile.person_id if profile is not None else ""
            if turn.use_cache:  # 3: the very same question needs no embedding
                turn.hit = cache.lookup_exact(
                    conn,
                    tenant=who.tenant,
                    scope=turn.scope,
                    params=turn.params,
                    question=question,
                )
                turn.lap("cache")
        if turn.hit is not None:
            return turn
        turn.vec = np.asarray(emb.embed([question])[0], dtype=np.float32)  # 4
        turn.lap("embed")
        with self.pool.connection() as conn:
            if turn.use_cache:  # 5
                turn.hit = cache.lookup(
                    conn,
                    tenant=who.tenant,
                    scope=turn.scope,
                    params=turn.params,
                    embedding=turn.vec,
                    threshold=self.cfg.cache.threshold,
                )
                turn.lap("cache_similar")
            if turn.hit is None:  # 6
                turn.prompt, turn.profile = self._retrieve(
                    conn, question, turn.vec, k, q.customer_id
                )
                turn.lap("retrieve")
        return turn

    def _finish(
        self, turn: _Turn, body: dict[str, Any], uses: list[cache.Use], found: bool
    ) -> dict[str, Any]:
        """Steps 8-9: cache the answer (a found one), report, log the conversation."""
        state = "hit" if turn.hit is not None else "miss" if turn.use_cache else "bypass"
        with self.pool.connection() as conn:
            if turn.hit is None and turn.use_cache and found:  # 8
                profile = turn.profile
                turn.scope = profile.person_id if profile is not None else ""
                cache.store(
                    conn,
                    tenant=turn.who.tenant,
                    scope=turn.scope,
                    params=turn.params,
                    question=turn.question,
                    embedding=turn.vec,
                    response=body,
                    uses=uses,
                    person_id=profile.person_id if profile is not None else None,
                    profile_version=profile.version if profile is not None else None,
                    ttl_s=self.cfg.cache.ttl_s,
                )
                turn.lap("cache_store")
            progresses = freshness.progress(conn, self.rt.log, self.pipelines)
            out: dict[str, Any] = {
                **body,
                "as_of": freshness.as_of(progresses),
                "cache": state,
                "conversation_id": str(uuid.uuid4()),
            }
            if turn.stale is not None:
                out["stale"] = turn.stale
            self._log_conversation(conn, out, turn.question, turn.q, turn.who, turn.scope)  # 9
            turn.lap("log")
        turn.timings["total"] = round((time.perf_counter() - turn.t0) * 1000, 2)
        out["timings_ms"] = turn.timings
        return out

    def _profile(self, conn: Conn, ref: str | None) -> Any:
        if not ref:
            return None
        from headwater.profiles.store import get_profile

        return get_profile(conn, ref)

    def _retrieve(
        self, conn: Conn, question: str, vec: np.ndarray, k: int, customer: str | None
    ) -> tuple[Prompt, Any]:
        """Step 5: profile, passages and their versions in one snapshot; the prompt."""
        from headwater.knowledge.search import search

        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            profile = self._profile(conn, customer)
            updated_at = None
            if profile is not None:
                row = conn.execute(
                    "SELECT updated_at FROM headwater_profiles.profiles WHERE person_id = %s",
                    (profile.person_id,),
                ).fetchone()
                updated_at = row[0] if row else None
            hits = search(conn, _OneVector(self.embedder, question, vec), question, k=k)
            meta: dict[str, tuple[int, float, int]] = {}
            if hits:
                rows = conn.execute(
                    "SELECT c.chunk_id, c.version, 1 - (c.embedding <=> %s::vector),"
                    " d.version FROM headwater_kb.chunks c JOIN headwater_kb.documents d"
                    " ON d.doc_id = c.doc_id WHERE c.chunk_id = ANY(%s)",
                    (vector_literal(vec), [h.chunk_id for h in hits]),
                ).fetchall()
                meta = {r[0]: (int(r[1]), float(r[2] or 0.0), int(r[3])) for r in rows}
        passages = [
            Passage(
                n=i + 1,
                doc_id=h.doc_id,
                chunk_id=h.chunk_id,
                version=meta[h.chunk_id][0],
                source=h.source,
                title=h.title,
                text=h.text,
                relevance=meta[h.chunk_id][1],
                doc_version=meta[h.chunk_id][2],
            )
            for i, h in enumerate(h for h in hits if h.chunk_id in meta)
        ]
        facts = profile_facts(profile.profile) if profile is not None else []
        changes = _changes(profile, updated_at) if profile is not None else []
        prompt = build_prompt(question, passages, facts, changes, budget=self.cfg.prompt_tokens)
        return prompt, profile

    @staticmethod
    def _body(prompt: Prompt, gen: Generation) -> tuple[dict[str, Any], list[cache.Use], bool]:
        """Step 6's result: the answer, what it used (every passage it was given: any of
        them could have changed it), and whether it found something (else it is not
        cached: a new document may answer it)."""
        by_n = {p.n: p for p in prompt.passages}
        citations = [
            {
                "doc_id": by_n[n].doc_id,
                "chunk_id": by_n[n].chunk_id,
                "version": by_n[n].version,
                "source": by_n[n].source,
                "text": by_n[n].text,
            }
            for n in gen.cited
            if n in by_n
        ]
        used_facts = {
            f.field: f.value for f in prompt.facts if gen.facts is None or f.field in gen.facts
        }
        body = {"answer": gen.text, "citations": citations, "profile_fields": used_facts}
        uses = [cache.Use(p.chunk_id, p.version, p.doc_id, p.doc_version) for p in prompt.passages]
        return body, uses, gen.found

    def _log_conversation(
        self,
        conn: Conn,
        out: dict[str, Any],
        question: str,
        q: AskQuery,
        who: Principal,
        scope: str,
    ) -> None:
        value = {
            "conversation_id": out["conversation_id"],
            "ts_ms": int(time.time() * 1000),
            "tenant": who.tenant,
            "api_key": who.name,
            "customer_id": q.customer_id,
            "person_id": scope or None,
            "question": question,
            "answer": out["answer"],
            "citations": [
                {k: c[k] for k in ("doc_id", "chunk_id", "version", "source")}
                for c in out["citations"]
            ],
            "profile_fields": sorted(out["profile_fields"]),
            "cache": out["cache"],
            "consistency": q.consistency,
            "stale": out.get("stale", False),
            "as_of": out["as_of"],
        }
        rec = Record(out["conversation_id"].encode(), json.dumps(value).encode())
        with conn.transaction():
            conn.execute(
                "INSERT INTO headwater_serving.conversations (conversation_id, tenant)"
                " VALUES (%s, %s)",
                (out["conversation_id"], who.tenant),
            )
            if self.rt.log.backend == "postgres":
                self.rt.log.append(CONVERSATIONS, [rec], conn=conn)
        if self.rt.log.backend != "postgres":
            self.rt.log.append(CONVERSATIONS, [rec])

    # -- feedback ---------------------------------------------------------------------

    def feedback(
        self, conversation_id: str, rating: int, comment: str | None, who: Principal
    ) -> dict[str, Any]:
        """Append a rating of an answer to the ``feedback`` topic.

        Raises:
            BadRequest (404): no conversation with this id in the caller's tenant.
        """
        value = {
            "conversation_id": conversation_id,
            "rating": rating,
            "comment": comment,
            "ts_ms": int(time.time() * 1000),
            "tenant": who.tenant,
            "api_key": who.name,
        }
        rec = Record(conversation_id.encode(), json.dumps(value).encode())
        with self.pool.connection() as conn, conn.transaction():
            known = conn.execute(
                "SELECT 1 FROM headwater_serving.conversations"
                " WHERE conversation_id = %s AND tenant = %s",
                (conversation_id, who.tenant),
            ).fetchone()
            if known is None:
                raise BadRequest(f"no conversation {conversation_id}", status=404)
            if self.rt.log.backend == "postgres":
                self.rt.log.append(FEEDBACK, [rec], conn=conn)
        if self.rt.log.backend != "postgres":
            self.rt.log.append(FEEDBACK, [rec])
        return {"conversation_id": conversation_id, "accepted": True}
