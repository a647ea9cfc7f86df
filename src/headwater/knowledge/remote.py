"""An OpenAI-compatible ``/embeddings`` client (vLLM, TEI, OpenAI, gateways).

Policies, all from ``[knowledge.embedder]``:
- ``batch_size`` texts per request, at most ``max_concurrency`` requests in flight;
- ``requests_per_s``: a token bucket shared by this process's requests;
- retries: on timeouts, connection errors, HTTP 429 and 5xx, up to ``max_retries``
  times with exponential backoff (``backoff_initial_s`` doubling to ``backoff_max_s``)
  and full jitter; a ``Retry-After`` header is honoured when longer;
- ``timeout_s`` per request.
After the last retry the failure is a :class:`RetryableError` (the worker retries the
batch later); any other 4xx is a :class:`ProcessingError` (the record is dead-lettered).
The API key is sent as a bearer token and never appears in errors or logs.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from headwater.config.knowledge import EmbedderConfig
from headwater.errors import ProcessingError, RetryableError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


class _RateLimiter:
    """Token bucket: ``rate`` acquisitions per second, bursts of one."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next = 0.0
        self.lock = threading.Lock()

    def acquire(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            at = max(now, self.next)
            self.next = at + self.interval
        if at > now:
            time.sleep(at - now)


class OpenAIEmbedder:
    """Embeds through ``POST {url}/embeddings``. ``requests`` counts HTTP attempts."""

    def __init__(self, cfg: EmbedderConfig) -> None:
        assert cfg.url and cfg.model
        self.cfg = cfg
        self.model = cfg.model
        self.dim = cfg.dim
        self.endpoint = cfg.url.rstrip("/") + "/embeddings"
        self._limiter = _RateLimiter(cfg.requests_per_s)
        self._pool = ThreadPoolExecutor(cfg.max_concurrency, thread_name_prefix="embed")
        self.requests = 0
        self._count_lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        bs = self.cfg.batch_size
        batches = [list(texts[i : i + bs]) for i in range(0, len(texts), bs)]
        parts = list(self._pool.map(self._post_with_retries, batches))
        out = np.concatenate(parts).astype(np.float32)
        if out.shape != (len(texts), self.dim):
            raise ProcessingError(
                f"embedding endpoint returned shape {out.shape}, expected ({len(texts)},"
                f" {self.dim}); set [knowledge.embedder] dim to the model's dimension"
            )
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.asarray(out / np.where(norms == 0, 1, norms), dtype=np.float32)

    def _post_with_retries(self, batch: list[str]) -> NDArray[np.float32]:
        attempt = 0
        while True:
            try:
                return self._post(batch)
            except _Transient as exc:
                if attempt >= self.cfg.max_retries:
                    raise RetryableError(
                        f"embedding endpoint {self.endpoint}: {exc} (after {attempt + 1} attempts)"
                    ) from None
                cap = min(self.cfg.backoff_max_s, self.cfg.backoff_initial_s * 2**attempt)
                time.sleep(max(random.uniform(0, cap), exc.retry_after or 0.0))
                attempt += 1

    def _post(self, batch: list[str]) -> NDArray[np.float32]:
        import numpy as np

        self._limiter.acquire()
        with self._count_lock:
            self.requests += 1
        body = json.dumps({"model": self.model, "input": batch}).encode()
        headers = {"Content-Type": "application/json"}
        if self.cfg.api_key is not None:
            headers["Authorization"] = f"Bearer {self.cfg.api_key.get_secret_value()}"
        req = urllib.request.Request(self.endpoint, body, headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                payload: Any = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 429 or exc.code >= 500:
                retry_after = _retry_after(exc.headers.get("Retry-After"))
                raise _Transient(f"HTTP {exc.code}", retry_after) from None
            raise ProcessingError(
                f"embedding endpoint {self.endpoint} refused the input: HTTP {exc.code}"
            ) from None
        except TimeoutError:
            raise _Transient(f"timed out after {self.cfg.timeout_s}s") from None
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            raise _Transient(f"connection failed: {type(exc).__name__}") from None
        except ValueError:
            raise ProcessingError(f"embedding endpoint {self.endpoint}: not JSON") from None
        try:
            data = sorted(payload["data"], key=lambda d: d["index"])
            return np.asarray([d["embedding"] for d in data], dtype=np.float32)
        except (KeyError, TypeError) as exc:
            raise ProcessingError(
                f"embedding endpoint {self.endpoint}: unexpected response ({exc})"
            ) from None


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
