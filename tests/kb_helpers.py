"""Helpers for knowledge-base tests: the expected index of a folder, the actual one."""

from __future__ import annotations

import hashlib
from pathlib import Path

from headwater.knowledge.chunking import chunk_blocks
from headwater.knowledge.embedder import minilm_tokenizer
from headwater.knowledge.parse import parse

from .conftest import query


def expected_index(
    folder: Path, source: str, size: int = 200, overlap: int = 32, max_bytes: int = 4096
) -> dict[str, tuple[str, frozenset[str]]]:
    """doc_id → (content hash, chunk ids) for every good file under ``folder``."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        rel = p.relative_to(folder).as_posix()
        data = p.read_bytes()
        if len(data) > max_bytes:
            continue
        try:
            doc = parse(rel, data)
        except Exception:
            continue
        doc_id = f"{source}:{rel}"
        chunks = chunk_blocks(doc_id, doc.blocks, minilm_tokenizer(), size, overlap, doc.title)
        out[doc_id] = (
            hashlib.sha256(data).hexdigest(),
            frozenset(c.chunk_id for c in chunks),
        )
    return out


def actual_index(dsn: str) -> dict[str, tuple[str, frozenset[str]]]:
    docs = dict(query(dsn, "SELECT doc_id, content_hash FROM headwater_kb.documents"))
    chunks: dict[str, set[str]] = {}
    for chunk_id, doc_id in query(dsn, "SELECT chunk_id, doc_id FROM headwater_kb.chunks"):
        chunks.setdefault(doc_id, set()).add(chunk_id)
    return {d: (h, frozenset(chunks.get(d, ()))) for d, h in docs.items()} | {
        d: ("(no document row)", frozenset(c)) for d, c in chunks.items() if d not in docs
    }


def cache_size(dsn: str) -> int:
    return int(query(dsn, "SELECT count(*) FROM headwater_kb.embedding_cache")[0][0])
