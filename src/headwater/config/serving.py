"""The ``[serving]`` section: API keys, the answer generator, the semantic cache and
read-your-writes. Every key is optional; the defaults serve offline on loopback.

API keys are never stored in clear: a key is either listed by its SHA-256
(``sha256 = "..."``, printed by ``headwater key``) or read from an environment
variable at start-up (``env = "HEADWATER_KEY_APP"``) and hashed at once.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Scope = Literal["ask", "feedback", "search", "profiles", "admin"]
SCOPES: tuple[Scope, ...] = ("ask", "feedback", "search", "profiles", "admin")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class ApiKeyConfig(_Model):
    """One API key: who it is (``name``), what it may do (``scopes``; ``admin`` implies
    all), which tenant's cache it shares, and the key itself as a hash or an env name."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    sha256: str | None = None
    env: str | None = None
    scopes: tuple[Scope, ...] = ("ask", "feedback")
    tenant: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and not _HEX64.match(v.lower()):
            raise ValueError("expected 64 hex digits (run 'headwater key' to make a key)")
        return v.lower() if v else v

    @field_validator("env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.match(v):
            raise ValueError("expected an environment variable name like HEADWATER_KEY_APP")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> ApiKeyConfig:
        if (self.sha256 is None) == (self.env is None):
            raise ValueError("give exactly one of sha256 or env")
        return self


class AuthConfig(_Model):
    keys: tuple[ApiKeyConfig, ...] = ()
    """With no keys the API is open, and the server refuses to bind to a non-loopback
    address."""


class GeneratorConfig(_Model):
    kind: Literal["extractive", "openai"] = "extractive"
    """``extractive``: offline, quotes and cites passages; ``openai``: any
    OpenAI-compatible ``/chat/completions`` endpoint."""
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = Field("OPENAI_API_KEY", pattern=_ENV_NAME.pattern)
    timeout_s: float = Field(30.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    max_retries: int = Field(3, ge=0, le=10)
    backoff_initial_s: float = Field(0.5, gt=0)
    temperature: float = Field(0.0, ge=0, le=2)
    max_answer_tokens: int = Field(400, ge=1, le=32_000)
    max_sentences: int = Field(3, ge=1, le=20)
    """Extractive: the most sentences quoted from the passages."""

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("expected a URL starting with http:// or https://")
        return v.rstrip("/")


class CacheConfig(_Model):
    enabled: bool = True
    threshold: float = Field(0.80, gt=0, le=1)
    """Cosine similarity from which an earlier question counts as the same. On the
    paraphrase set of bench/cache.py (MiniLM): 0.80 → precision 1.0, hit rate 0.15;
    0.70 → 1.0, 0.42; 0.65 → 0.975, 0.54; 0.60 → 0.78."""
    ttl_s: int = Field(86_400, ge=1)
    """Backstop: entries expire even when nothing they used changed."""


class FreshnessConfig(_Model):
    timeout_s: float = Field(10.0, gt=0, le=300)
    """How long ``consistency: "fresh"`` waits before answering with ``stale: true``."""
    poll_ms: int = Field(50, ge=5, le=5000)


class ServingConfig(_Model):
    auth: AuthConfig = AuthConfig()
    generator: GeneratorConfig = GeneratorConfig()
    cache: CacheConfig = CacheConfig()
    freshness: FreshnessConfig = FreshnessConfig()
    k: int = Field(5, ge=1, le=50)
    """Passages retrieved per question (a request may ask for up to ``max_k``)."""
    max_k: int = Field(20, ge=1, le=100)
    prompt_tokens: int = Field(2000, ge=200, le=200_000)
    """Token budget of the prompt (instructions, profile, passages, question)."""
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    depends_on: tuple[str, ...] = ()
    """Pipelines an answer depends on (read-your-writes waits for them); empty: all."""
