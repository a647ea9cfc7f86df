"""Answer generators: given a :class:`~headwater.serving.prompt.Prompt`, an answer that
cites its passages by number.

- :class:`~headwater.serving.generators.extractive.ExtractiveGenerator` (default):
  offline and deterministic; quotes the sentences and profile facts that answer.
- :class:`~headwater.serving.generators.openai.OpenAIChat`: any OpenAI-compatible
  ``/chat/completions`` endpoint (streaming, timeouts, retries with backoff).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from headwater.config.serving import GeneratorConfig
from headwater.serving.prompt import Prompt

NOTHING_FOUND = "I found nothing in the knowledge base that answers this question."


@dataclass(frozen=True)
class Generation:
    text: str
    cited: tuple[int, ...]
    """Citation numbers (``Passage.n``) the answer relies on, in first-use order."""
    facts: tuple[str, ...] | None = None
    """Profile fields the answer used; None: unknown (every field given counts)."""
    found: bool = True
    """False when nothing relevant was found."""


class Generator(Protocol):
    name: str
    """Identifies the generator and its settings (part of the cache key)."""

    def generate(self, prompt: Prompt) -> Generation: ...

    def stream(self, prompt: Prompt) -> Iterator[str]:
        """The answer's text in pieces as it is produced."""
        ...

    def generation(self, prompt: Prompt, text: str) -> Generation:
        """The :class:`Generation` of a streamed ``text`` (its citations, facts)."""
        ...


_CITE = re.compile(r"\[(\d{1,3})\]")


def cited_numbers(text: str, valid: set[int]) -> tuple[int, ...]:
    """``[n]`` marks in ``text`` that name a passage, in first-use order."""
    out: list[int] = []
    for m in _CITE.finditer(text):
        n = int(m.group(1))
        if n in valid and n not in out:
            out.append(n)
    return tuple(out)


def build_generator(cfg: GeneratorConfig) -> Generator:
    """The configured generator. Raises ConfigError (openai: the key's env var unset)."""
    if cfg.kind == "openai":
        from headwater.serving.generators.openai import OpenAIChat

        return OpenAIChat.from_config(cfg)
    from headwater.serving.generators.extractive import ExtractiveGenerator

    return ExtractiveGenerator(max_sentences=cfg.max_sentences)
