"""Glob patterns over relative POSIX paths: ``*`` and ``?`` stay inside one folder,
``**`` crosses folders (``**/x`` also matches ``x`` at the top)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches(path: str, patterns: Sequence[str]) -> bool:
    """Whether relative ``path`` matches any of ``patterns``."""
    return any(_compile(p).match(path) for p in patterns)


def selected(path: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Included and not excluded."""
    return matches(path, include) and not matches(path, exclude)
