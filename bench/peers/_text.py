"""Text extraction and chunking shared by the peer drivers (standard library only).

Both peers get the same plain text and the same chunks, so the comparison isolates
what differs between the systems: change detection, embedding and the write to the
output. Chunks are character windows of about 200 MiniLM tokens (800 characters,
100 of overlap), the size Headwater's default chunker packs.
"""

from __future__ import annotations

from html.parser import HTMLParser

CHUNK_CHARS = 800
OVERLAP_CHARS = 100
_SKIP = {"script", "style", "head"}


class _TextOf(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def plain_text(name: str, raw: str) -> str:
    """The visible text of an HTML page, or ``raw`` itself for any other file."""
    if name.endswith((".html", ".htm")):
        parser = _TextOf()
        parser.feed(raw)
        parser.close()
        raw = " ".join(parser.parts)
    return " ".join(raw.split())


def chunks(text: str) -> list[str]:
    """Overlapping windows of ``text``, cut at spaces where one is near."""
    out: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + CHUNK_CHARS)
        if end < len(text):
            cut = text.rfind(" ", start + CHUNK_CHARS // 2, end)
            end = cut if cut > 0 else end
        out.append(text[start:end].strip())
        if end >= len(text):
            break
        start = max(end - OVERLAP_CHARS, start + 1)
    return [c for c in out if c]
