"""Binlog positions: a file and the byte offset of the next event to read."""

from __future__ import annotations

import re
from dataclasses import dataclass

_INDEX = re.compile(r"\.(\d+)$")


@dataclass(frozen=True, slots=True, order=False)
class BinlogPosition:
    """``file:pos``; ``pos`` is the offset of the first event *not* yet consumed."""

    file: str
    pos: int

    def key(self) -> tuple[str, int, int]:
        """Sort key: base name, numeric file index, offset (``.000010`` after ``.000009``)."""
        m = _INDEX.search(self.file)
        base = self.file[: m.start()] if m else self.file
        return (base, int(m.group(1)) if m else 0, self.pos)

    def __lt__(self, other: BinlogPosition) -> bool:
        return self.key() < other.key()

    def __le__(self, other: BinlogPosition) -> bool:
        return self.key() <= other.key()

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"
