"""The offline extractive answerer: quotes the sentences and profile facts that answer.

Deterministic: the same prompt gives the same answer. Scoring, per sentence of each
passage: the share of the question's content words (lower-cased, stop words removed,
light suffix stemming, weighted by rarity among the candidate sentences) that the
sentence or its document's title contains, blended with its passage's cosine relevance
to the question (``0.6 * overlap + 0.4 * relevance``). The best sentences (up to ``max_sentences``,
each within 70% of the best score) are quoted in document order, each with its ``[n]``.
A passage counts as relevant from a cosine of ``min_relevance``, or from
``lexical_relevance`` when the sentence also shares content words with the question;
when no sentence shares a word with the question, the opening sentence of a passage
with a cosine of at least ``min_relevance + 0.1`` is quoted; with none, the answer says
that nothing relevant was found.

Sentences that address an AI model ("ignore previous instructions", "you are now")
are never quoted: document text is data, not instructions.

Profile facts are used when a word of the field name (``loyalty_tier`` → loyalty,
tier) or of its value appears in the question.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from headwater.serving.generators import NOTHING_FOUND, Generation
from headwater.serving.prompt import Fact, Passage, Prompt

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n\s*\n|\n(?=\s*[-*•]|\s*\d+[.)])")
_WORD = re.compile(r"[a-z0-9]+")
_INJECTION = re.compile(
    r"\b(ignore|disregard|forget)\b.{0,40}\b(instruction|prompt|rule|above|previous)"
    r"|\byou are now\b|\bsystem prompt\b|\bas an ai\b|\bnew instructions?\b",
    re.IGNORECASE,
)
STOP = frozenset(
    """a about above after again all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers him his how i if in into is it its itself
    just me more most my myself no nor not now of off on once only or other our ours out
    over own same she should so some such than that the their theirs them then there these
    they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours tell please know get got""".split()  # noqa: SIM905
)


def stem(word: str) -> str:
    for suffix in ("ings", "ing", "ies", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def terms(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOP]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and len(s.strip()) > 2]


@dataclass(frozen=True)
class _Candidate:
    passage: Passage
    index: int
    text: str
    overlap: float
    score: float


class ExtractiveGenerator:
    """See the module docstring."""

    def __init__(
        self,
        *,
        max_sentences: int = 3,
        min_relevance: float = 0.45,
        lexical_relevance: float = 0.2,
    ) -> None:
        self.max_sentences = max_sentences
        self.min_relevance = min_relevance
        self.lexical_relevance = lexical_relevance
        self.name = f"extractive:{max_sentences}:{min_relevance}:{lexical_relevance}"

    def generate(self, prompt: Prompt) -> Generation:
        q = set(terms(prompt.question))
        facts = self._facts(q, prompt.facts)
        chosen = self._sentences(q, prompt.passages)
        parts: list[str] = []
        if chosen:
            parts.append(" ".join(f"{c.text} [{c.passage.n}]" for c in chosen))
        if facts:
            listed = "; ".join(f"{f.field.replace('_', ' ')}: {f.value}" for f in facts)
            parts.append(f"From your profile: {listed}.")
        if not parts:
            return Generation(NOTHING_FOUND, (), (), found=False)
        cited: list[int] = []
        for c in chosen:
            if c.passage.n not in cited:
                cited.append(c.passage.n)
        return Generation(" ".join(parts), tuple(cited), tuple(f.field for f in facts))

    def stream(self, prompt: Prompt) -> Iterator[str]:
        yield self.generate(prompt).text

    def generation(self, prompt: Prompt, text: str) -> Generation:
        return self.generate(prompt)  # deterministic: the text streamed

    def _sentences(self, q: set[str], passages: tuple[Passage, ...]) -> list[_Candidate]:
        raw: list[tuple[Passage, int, str, set[str]]] = []
        for p in passages:
            context = set(terms(p.title or ""))  # the title's words count, unquoted
            for i, s in enumerate(sentences(p.text)):
                if not _INJECTION.search(s):
                    raw.append((p, i, s, set(terms(s)) | context))
        if not raw or not q:
            return []
        df = Counter(t for *_, ts in raw for t in ts & q)
        weight = {t: math.log(1 + len(raw) / (1 + df[t])) + 0.1 for t in q}
        total = sum(weight.values())
        scored: list[_Candidate] = []
        for p, i, s, ts in raw:
            overlap = sum(weight[t] for t in ts & q) / total
            relevant = p.relevance >= self.min_relevance or (
                overlap > 0 and p.relevance >= self.lexical_relevance
            )
            if not relevant or overlap == 0:
                continue
            scored.append(_Candidate(p, i, s, overlap, 0.6 * overlap + 0.4 * p.relevance))
        if not scored:  # no shared words: quote the opening of a clearly similar passage
            close = [r for r in raw if r[0].relevance >= self.min_relevance + 0.1]
            if not close:
                return []
            p, i, s, _ = max(close, key=lambda r: (r[0].relevance, -r[0].n, -r[1]))
            return [_Candidate(p, i, s, 0.0, p.relevance)]
        scored.sort(key=lambda c: (-c.score, c.passage.n, c.index))
        best = scored[0].score
        top = [c for c in scored[: self.max_sentences] if c.score >= 0.7 * best]
        return sorted(top, key=lambda c: (c.passage.n, c.index))

    @staticmethod
    def _facts(q: set[str], facts: tuple[Fact, ...]) -> list[Fact]:
        out = []
        for f in facts:
            field_terms = set(terms(f.field.replace("_", " ").replace(".", " ")))
            if field_terms & q or (set(terms(f.value)) & q and len(f.value) < 80):
                out.append(f)
        return out
