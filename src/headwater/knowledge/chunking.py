"""Structure-aware chunking measured in the embedding model's tokens.

Blocks (paragraphs) under the same headings are packed into chunks of at most
``size`` tokens; a block longer than that is cut into token windows. Each chunk
after the first of a section starts with the last ``overlap`` tokens of the chunk
before. Headings are not inside the chunk's text: they are kept beside it and
prefixed to what is embedded and full-text indexed.

Chunk ids are content-derived: sha256 of (document id, headings, text, n) where n
counts identical earlier chunks of the document. An edit re-ids only the chunks whose
text changed (and, through the overlap or re-packing, at most its neighbours in the
same section): the others keep their ids, rows and embeddings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

from headwater.knowledge.embedder import Tokenizer
from headwater.knowledge.parse import Block


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    ordinal: int
    text: str
    headings: tuple[str, ...]
    embed_text: str
    """What is embedded and full-text indexed: headings, then the text."""
    text_hash: str
    """sha256 of ``embed_text``: the embedding cache key (with the model)."""


@dataclass(frozen=True)
class _Unit:
    text: str
    offsets: list[tuple[int, int]]


def chunk_blocks(
    doc_id: str,
    blocks: Sequence[Block],
    tokenizer: Tokenizer,
    size: int,
    overlap: int,
    title: str | None = None,
) -> list[Chunk]:
    """Chunks of a document's blocks, in document order. ``title`` (the document's
    own, from its content) is prefixed to the embedded context unless it already
    heads the headings."""
    blocks = [b for b in blocks if b.text.strip()]
    offsets = tokenizer.offsets([b.text for b in blocks]) if blocks else []
    texts: list[tuple[tuple[str, ...], str]] = []
    indexed = list(zip(blocks, offsets, strict=True))
    for headings, group in groupby(indexed, key=lambda bo: bo[0].headings):
        units: list[_Unit] = []
        for block, offs in group:
            units.extend(_split(block.text, offs, size, overlap))
        texts.extend((headings, t) for t in _pack(units, size, overlap))
    seen: dict[tuple[tuple[str, ...], str], int] = {}
    out = []
    for ordinal, (headings, text) in enumerate(texts):
        n = seen.get((headings, text), 0)
        seen[(headings, text)] = n + 1
        ident = "\x1f".join((doc_id, "\x1e".join(headings), text, str(n)))
        context = headings if not title or headings[:1] == (title,) else (title, *headings)
        embed_text = f"{' > '.join(context)}\n{text}" if context else text
        out.append(
            Chunk(
                chunk_id=hashlib.sha256(ident.encode()).hexdigest()[:32],
                ordinal=ordinal,
                text=text,
                headings=headings,
                embed_text=embed_text,
                text_hash=hashlib.sha256(embed_text.encode()).hexdigest(),
            )
        )
    return out


def _split(text: str, offs: list[tuple[int, int]], size: int, overlap: int) -> list[_Unit]:
    """A block as one unit, or token windows of ``size`` overlapping by ``overlap``."""
    if len(offs) <= size:
        return [_Unit(text, offs)]
    units = []
    step = size - overlap
    for start in range(0, len(offs), step):
        window = offs[start : start + size]
        lo, hi = window[0][0], window[-1][1]
        units.append(_Unit(text[lo:hi], [(a - lo, b - lo) for a, b in window]))
        if start + size >= len(offs):
            break
    return units


def _pack(units: list[_Unit], size: int, overlap: int) -> list[str]:
    out: list[str] = []
    parts: list[str] = []
    count = 0
    last: _Unit | None = None
    for u in units:
        n = len(u.offsets)
        if parts and count + n > size:
            out.append("\n\n".join(parts))
            parts, count = [], 0
            if overlap and last is not None and len(last.offsets) > overlap and n + overlap <= size:
                tail = last.text[last.offsets[-overlap][0] :]
                parts, count = [tail], overlap
        parts.append(u.text)
        count += n
        last = u
    if parts:
        out.append("\n\n".join(parts))
    return out
