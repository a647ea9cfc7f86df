"""The ``knowledge`` processor: file events or captured rows → indexed chunks.

Per micro-batch (inside the worker's transaction, so exactly-once with the offsets):
the latest event per document wins; deletes remove the document's chunks; upserts are
parsed, chunked in the model's tokens, embedded (cache first) and applied chunk by
chunk (:mod:`headwater.knowledge.index`). A file the source could not read (its
``error`` header), an unparsable one, a row whose template fails, or an embedding the
model refuses raises :class:`ProcessingError`: the worker dead-letters that record
alone and goes on. An embedding service that is briefly away raises
:class:`RetryableError` (the batch is retried with backoff).
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from headwater.config.knowledge import KnowledgePipeline
from headwater.engine.processor import Processor
from headwater.errors import ConfigError, ProcessingError
from headwater.knowledge.chunking import chunk_blocks
from headwater.knowledge.embedder import Embedder, Tokenizer, load_embedder, tokenizer_for
from headwater.knowledge.index import (
    DocumentUpsert,
    IndexStats,
    apply_documents,
    delete_documents,
)
from headwater.knowledge.parse import Block, parse
from headwater.log.base import Conn, LogRecord

INDEX_DIM = 384
"""The dimension of ``headwater_kb.chunks.embedding`` (contracts.md)."""


class KnowledgeProcessor(Processor):
    """Indexes one topic's documents into ``headwater_kb`` (exactly-once)."""

    def __init__(self, cfg: KnowledgePipeline, embedder: Embedder | None = None) -> None:
        self.cfg = cfg
        self._embedder = embedder
        self._tokenizer: Tokenizer | None = None
        self.last_stats: IndexStats | None = None
        """What the last ``process`` call did (embedded, cached, kept, inserted...)."""

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = load_embedder(self.cfg.embedder)
        return self._embedder

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = tokenizer_for(self.embedder)
        return self._tokenizer

    def setup(self, conn: Conn) -> None:
        """Load the model before the first batch and check its dimension.

        Raises:
            ConfigError: the embedder's dimension is not the index's (384).
        """
        if self.embedder.dim != INDEX_DIM:
            raise ConfigError(
                f"pipelines.{self.cfg.name}: embedder {self.embedder.model!r} makes"
                f" {self.embedder.dim}-dimensional vectors; headwater_kb.chunks holds"
                f" {INDEX_DIM}: use a {INDEX_DIM}-dimensional model"
            )

    def process(self, conn: Conn, records: Sequence[LogRecord]) -> None:
        latest: dict[bytes | None, LogRecord] = {}
        for r in records:
            latest.pop(r.key, None)
            latest[r.key] = r
        deletes: list[str] = []
        upserts: list[DocumentUpsert] = []
        for r in latest.values():
            doc = self._document(r) if self.cfg.format == "files" else self._row(r)
            if isinstance(doc, str):
                deletes.append(doc)
            else:
                upserts.append(doc)
        delete_documents(conn, deletes)
        self.last_stats = apply_documents(conn, self.embedder, upserts)

    # -- files ----------------------------------------------------------------------

    def _document(self, r: LogRecord) -> DocumentUpsert | str:
        h = r.headers
        path = h.get("path") or (r.key or b"").decode()
        doc_id = f"{self.cfg.source}:{path}"
        if h.get("op") == "delete" or r.value is None:
            return doc_id
        if h.get("error"):
            raise ProcessingError(f"{path}: {h['error']}")
        parsed = parse(path, r.value)
        return self._upsert(
            doc_id,
            uri=h.get("uri", path),
            title=parsed.title,
            fallback_title=PurePosixPath(path).stem,
            version=int(h.get("version", r.offset)),
            content_hash=h.get("content_hash") or hashlib.sha256(r.value).hexdigest(),
            position=h.get("position"),
            blocks=parsed.blocks,
            metadata={"path": path, "format": parsed.format, "size": len(r.value)},
        )

    def _upsert(
        self,
        doc_id: str,
        *,
        uri: str,
        title: str | None,
        fallback_title: str | None = None,
        version: int,
        content_hash: str,
        position: str | None,
        blocks: list[Block],
        metadata: dict[str, Any],
    ) -> DocumentUpsert:
        ch = self.cfg.chunking
        chunks = chunk_blocks(
            doc_id, blocks, self.tokenizer, ch.size_tokens, ch.overlap_tokens, title
        )
        return DocumentUpsert(
            doc_id,
            self.cfg.source,
            uri,
            title or fallback_title,
            version,
            content_hash,
            position,
            chunks,
            metadata,
        )

    # -- rows -------------------------------------------------------------------------

    def _row(self, r: LogRecord) -> DocumentUpsert | str:
        key = (r.key or b"").decode("utf-8", "replace")
        doc_id = f"{self.cfg.source}:{key}"
        if r.value is None:
            return doc_id
        try:
            env = json.loads(r.value)
        except ValueError as exc:
            raise ProcessingError(f"not a change event: {exc}") from None
        row = env.get("after") if isinstance(env, dict) else None
        if env.get("op") == "d" or row is None:
            return doc_id
        text = _render(self.cfg.template or "", row)
        if not text.strip():
            return doc_id
        title = None
        if self.cfg.title:
            t = self.cfg.title
            title = _render("{" + t + "}" if t.isidentifier() else t, row)
        src = env.get("source") or {}
        return self._upsert(
            doc_id,
            uri=f"{src.get('connector', 'row')}://{self.cfg.source}/{key}",
            title=title,
            version=r.offset,
            content_hash=hashlib.sha256(text.encode()).hexdigest(),
            position=r.headers.get("position"),
            blocks=[Block(p) for p in text.split("\n\n") if p.strip()],
            metadata={"table": self.cfg.source, "key": key},
        )


class _Row(dict[str, Any]):
    def __missing__(self, name: str) -> Any:
        raise ProcessingError(f"template names column {name!r}, which the row lacks")


def _render(template: str, row: dict[str, Any]) -> str:
    values = _Row({k: "" if v is None else v for k, v in row.items()})
    return string.Formatter().vformat(template, (), values)
