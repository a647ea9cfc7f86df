"""Micro-batching of concurrent question embeddings.

Requests embed one question each; the model costs little more for 16 short texts than
for 1. :class:`BatchingEmbedder` makes the oldest waiting caller the *leader*: it
embeds everything pending (up to ``max_batch``) in one call, then hands leadership to
the oldest request that arrived meanwhile; the others wait for their row. No request
waits for a timer: with one client it is a plain call; under load, batches form by
themselves.

Guarantee: ``embed(texts)`` returns exactly the rows the inner embedder gives for those
texts (batching changes only how many are computed per call). An error in the inner
call is raised in every caller of that batch.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported where used: the server starts without it
    import numpy as np


class _Pending:
    __slots__ = ("done", "error", "lead", "text", "vector")

    def __init__(self, text: str) -> None:
        self.text = text
        self.vector: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.lead = False


class BatchingEmbedder:
    """Wraps an embedder (``model``, ``dim``, ``embed(texts)``); see the module doc."""

    def __init__(self, inner: Any, max_batch: int = 32) -> None:
        self.inner = inner
        self.model: str = inner.model
        self.dim: int = inner.dim
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._leading = False
        self.calls = 0
        """Inner calls made (fewer than requests under load)."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        if len(texts) != 1:
            return np.asarray(self.inner.embed(texts), dtype=np.float32)
        me = _Pending(texts[0])
        with self._lock:
            self._pending.append(me)
            if not self._leading:
                self._leading = me.lead = True
        while True:
            if me.lead:
                me.lead = False
                self._run_batch()  # includes me: leaders are the oldest pending
            me.done.wait()
            if me.vector is not None or me.error is not None:
                break
            me.done.clear()  # woken to lead the next batch
        if me.error is not None:
            raise me.error
        assert me.vector is not None
        return me.vector[None, :]

    def _run_batch(self) -> None:
        with self._lock:
            batch = self._pending[: self.max_batch]
            del self._pending[: len(batch)]
        import numpy as np

        try:
            vecs = np.asarray(self.inner.embed([p.text for p in batch]), dtype=np.float32)
            self.calls += 1
            for p, v in zip(batch, vecs, strict=True):
                p.vector = v
        except BaseException as exc:
            for p in batch:
                p.error = exc
        with self._lock:
            if self._pending:  # hand over: the oldest waiter leads the next batch
                self._pending[0].lead = True
                self._pending[0].done.set()
            else:
                self._leading = False
        for p in batch:
            p.done.set()
