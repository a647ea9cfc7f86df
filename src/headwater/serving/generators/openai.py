"""A client of any OpenAI-compatible ``POST {base_url}/chat/completions`` endpoint
(OpenAI, vLLM, llama.cpp server, TGI, LiteLLM, Bedrock gateways).

Policies are arguments: a connect timeout and a total read timeout per attempt; up to
``max_retries`` retries of connection errors, timeouts, 408, 409, 429 and 5xx, with
exponential backoff (``backoff_initial_s * 2**attempt``, jittered, or the server's
``Retry-After`` when it sends one, at most 30 s). Other 4xx are not retried. A stream
is retried only until its first token arrived (after that, a repeat would duplicate
text). The HTTP client is created lazily; the key comes from the environment variable
named by ``api_key_env`` and never appears in errors or logs.

Errors: :class:`GeneratorError` (a :class:`~headwater.errors.HeadwaterError`) naming
the endpoint, the status and the server's message, never the key.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from typing import Any

from headwater.config.serving import GeneratorConfig
from headwater.errors import ConfigError, HeadwaterError, require
from headwater.serving.generators import Generation, cited_numbers
from headwater.serving.prompt import Prompt

_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class GeneratorError(HeadwaterError):
    """The chat endpoint failed (after retries) or answered something unusable."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIChat:
    """See the module docstring."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        max_retries: int = 3,
        backoff_initial_s: float = 0.5,
        temperature: float = 0.0,
        max_tokens: int = 400,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._key = api_key
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_retries = max_retries
        self.backoff_initial_s = backoff_initial_s
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.name = f"openai:{self.base_url}:{model}:{temperature}:{max_tokens}"
        self._client: Any = None
        self.attempts = 0
        """Requests sent, retries included (for tests and metrics)."""

    @classmethod
    def from_config(cls, cfg: GeneratorConfig) -> OpenAIChat:
        key = os.environ.get(cfg.api_key_env)
        if not key and not cfg.base_url.startswith(("http://127.", "http://localhost")):
            raise ConfigError(
                f"serving.generator.api_key_env: environment variable {cfg.api_key_env} is"
                f" not set; export the API key of {cfg.base_url} in it"
            )
        return cls(
            base_url=cfg.base_url,
            model=cfg.model,
            api_key=key,
            timeout_s=cfg.timeout_s,
            connect_timeout_s=cfg.connect_timeout_s,
            max_retries=cfg.max_retries,
            backoff_initial_s=cfg.backoff_initial_s,
            temperature=cfg.temperature,
            max_tokens=cfg.max_answer_tokens,
        )

    # -- public ---------------------------------------------------------------------

    def generate(self, prompt: Prompt) -> Generation:
        return self.generation(prompt, "".join(self.stream(prompt)))

    def generation(self, prompt: Prompt, text: str) -> Generation:
        valid = {p.n for p in prompt.passages}
        return Generation(text, cited_numbers(text, valid), None, found=bool(text.strip()))

    def complete(self, prompt: Prompt) -> str:
        """One non-streamed completion (retried as a whole)."""

        def attempt() -> str:
            r = self._http().post(
                self._url(), headers=self._headers(), json=self._payload(prompt, stream=False)
            )
            self._check(r)
            try:
                return str(r.json()["choices"][0]["message"]["content"] or "")
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise GeneratorError(f"{self._url()}: unexpected response: {exc}") from None

        return self._retrying(attempt)

    def stream(self, prompt: Prompt) -> Iterator[str]:
        """Token pieces as the server sends them (server-sent events)."""
        for attempt in range(self.max_retries + 1):
            got_any = False
            try:
                for piece in self._stream_once(prompt):
                    got_any = True
                    yield piece
                return
            except _Retryable as exc:
                if got_any or attempt == self.max_retries:
                    raise GeneratorError(
                        f"{self._url()}: {exc} (after {attempt + 1} attempt(s))"
                    ) from None
                self._sleep(attempt, exc.retry_after)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- internals --------------------------------------------------------------------

    def _url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self._key:
            h["Authorization"] = f"Bearer {self._key}"
        return h

    def _payload(self, prompt: Prompt, *, stream: bool) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": prompt.messages(),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stream": stream,
        }

    def _http(self) -> Any:
        if self._client is None:
            httpx: Any = require("httpx", "openai")
            self._client = httpx.Client(
                timeout=httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s)
            )
        return self._client

    def _stream_once(self, prompt: Prompt) -> Iterator[str]:
        client = self._http()  # MissingDependency with the pip line when httpx is absent
        import httpx

        self.attempts += 1
        deadline = time.monotonic() + self.timeout_s
        try:
            payload = self._payload(prompt, stream=True)
            with client.stream("POST", self._url(), headers=self._headers(), json=payload) as r:
                if r.status_code >= 400:
                    r.read()
                self._check(r)
                for line in r.iter_lines():
                    if time.monotonic() > deadline:
                        raise _Retryable(f"no complete answer within {self.timeout_s} s")
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        delta = json.loads(data)["choices"][0].get("delta", {})
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                        raise GeneratorError(
                            f"{self._url()}: malformed stream event: {data[:200]}"
                        ) from None
                    piece = delta.get("content")
                    if piece:
                        yield str(piece)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None

    def _retrying(self, fn: Any) -> str:
        self._http()  # MissingDependency with the pip line when httpx is absent
        import httpx

        for attempt in range(self.max_retries + 1):
            self.attempts += 1
            try:
                return str(fn())
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                err: _Retryable = _Retryable(f"{type(exc).__name__}: {exc}")
            except _Retryable as exc:
                err = exc
            if attempt == self.max_retries:
                raise GeneratorError(f"{self._url()}: {err} (after {attempt + 1} attempt(s))")
            self._sleep(attempt, err.retry_after)
        raise AssertionError("unreachable")

    def _check(self, r: Any) -> None:
        if r.status_code < 400:
            return
        try:
            message = str(r.json().get("error", {}).get("message", ""))[:300]
        except Exception:
            message = r.text[:300]
        text = f"HTTP {r.status_code}: {message or r.reason_phrase}"
        if r.status_code in _RETRY_STATUS:
            retry_after = r.headers.get("retry-after")
            try:
                after = float(retry_after) if retry_after else None
            except ValueError:
                after = None
            raise _Retryable(text, after)
        raise GeneratorError(f"{self._url()}: {text}")

    def _sleep(self, attempt: int, retry_after: float | None) -> None:
        if retry_after is not None:
            delay = min(retry_after, 30.0)
        else:
            delay = self.backoff_initial_s * 2**attempt * random.uniform(0.5, 1.0)
        time.sleep(delay)
