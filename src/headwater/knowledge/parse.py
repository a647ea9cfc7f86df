"""Documents to text blocks: txt, md, html (main text), pdf, json/csv rows.

A block is a paragraph-like unit with the headings above it, which the chunker keeps
as context. Anything that yields no usable text raises :class:`ProcessingError` with
the reason (binary, undecodable, empty, broken PDF...): the record is dead-lettered.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from headwater.errors import ProcessingError

FORMATS = {
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".log": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
}


@dataclass(frozen=True)
class Block:
    text: str
    headings: tuple[str, ...] = ()


@dataclass
class ParsedDocument:
    title: str | None
    """From the content (md h1, html title, pdf metadata); None when it has none."""
    format: str
    blocks: list[Block] = field(default_factory=list)


def format_of(path: str) -> str:
    """The format a file's name implies ("text" for unknown extensions)."""
    return FORMATS.get(PurePosixPath(path).suffix.lower(), "text")


def parse(path: str, data: bytes) -> ParsedDocument:
    """Parse ``data`` (the bytes of file ``path``).

    Raises:
        ProcessingError: empty, binary, undecodable, or a malformed pdf/json/csv.
    """
    fmt = format_of(path)
    if not data.strip():
        raise ProcessingError(f"empty: {path} has no content")
    if fmt == "pdf":
        doc = _pdf(data)
    else:
        text = _decode(path, data)
        if fmt == "markdown":
            doc = _markdown(text)
        elif fmt == "html":
            doc = html_document(text)
        elif fmt in ("json", "jsonl"):
            doc = _json(path, text, fmt)
        elif fmt in ("csv", "tsv"):
            doc = _csv(path, text, fmt)
        else:
            doc = ParsedDocument(None, "text", [Block(p) for p in _paragraphs(text)])
    if not any(b.text.strip() for b in doc.blocks):
        raise ProcessingError(f"empty: no text in {path} ({doc.format})")
    return doc


def _decode(path: str, data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ProcessingError(f"undecodable: {path}: {exc}") from None
    if b"\x00" in data[:8192]:
        raise ProcessingError(f"binary: {path} contains NUL bytes; not a text document")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ProcessingError(
            f"undecodable: {path} is not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None


_BLANK = re.compile(r"\n\s*\n")
_WS = re.compile(r"[ \t\r\f\v]+")
_ALL_WS = re.compile(r"\s+")


def _paragraphs(text: str) -> Iterator[str]:
    for p in _BLANK.split(text):
        p = _WS.sub(" ", p).strip()
        if p:
            yield p


_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _markdown(text: str) -> ParsedDocument:
    """Paragraphs under the stack of ATX headings above them; code fences stay whole."""
    blocks: list[Block] = []
    stack: list[tuple[int, str]] = []
    buf: list[str] = []
    title: str | None = None
    fence: str | None = None

    def flush() -> None:
        if buf:
            para = "\n".join(buf).strip()
            if para:
                blocks.append(Block(para, tuple(h for _, h in stack)))
            buf.clear()

    for line in text.splitlines():
        stripped = line.strip()
        if fence is not None:
            buf.append(line)
            if stripped.startswith(fence):
                fence = None
                flush()
            continue
        if stripped.startswith(("```", "~~~")):
            flush()
            fence = stripped[:3]
            buf.append(line)
            continue
        m = _ATX.match(stripped)
        if m:
            flush()
            level, heading = len(m.group(1)), m.group(2)
            stack = [(lv, h) for lv, h in stack if lv < level]
            stack.append((level, heading))
            if level == 1 and title is None:
                title = heading
            continue
        if not stripped:
            flush()
            continue
        buf.append(stripped)
    flush()
    return ParsedDocument(title, "markdown", blocks)


_SKIP = {
    "script",
    "style",
    "noscript",
    "template",
    "nav",
    "header",
    "footer",
    "aside",
    "form",
    "svg",
    "iframe",
    "button",
    "select",
}
_BLOCK = {
    "p",
    "div",
    "li",
    "ul",
    "ol",
    "pre",
    "table",
    "tr",
    "td",
    "th",
    "dt",
    "dd",
    "dl",
    "blockquote",
    "section",
    "article",
    "main",
    "body",
    "figure",
    "figcaption",
    "br",
    "hr",
    "caption",
    "tbody",
    "thead",
}
_BOILERPLATE = re.compile(
    r"(?:^|[\s_-])(?:nav|navbar|navheader|navfooter|navigation|menu|sidebar|breadcrumbs?"
    r"|footer|header|cookie-?banner|skip-?link)(?:$|[\s_-])",
    re.IGNORECASE,
)
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


def html_document(html: str) -> ParsedDocument:
    """Main text of an HTML page: ``<main>``/``<article>``/``[role=main]`` or the body,
    without navigation, headers, footers, scripts; blocks under their headings."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    title_node = tree.css_first("title")
    title = _ALL_WS.sub(" ", title_node.text()).strip() if title_node else None
    root = (
        tree.css_first("main")
        or tree.css_first("article")
        or tree.css_first("[role=main]")
        or tree.body
    )
    blocks: list[Block] = []
    stack: list[tuple[int, str]] = []
    buf: list[str] = []

    def flush() -> None:
        text = _ALL_WS.sub(" ", "".join(buf)).strip()
        buf.clear()
        if text:
            blocks.append(Block(text, tuple(h for _, h in stack)))

    def walk(node: Any) -> None:
        tag = node.tag
        if tag == "-text":
            buf.append(node.text_content or "")
            return
        if tag in _SKIP or tag.startswith("-"):
            return
        attrs = node.attributes
        marks = f"{attrs.get('class') or ''} {attrs.get('id') or ''} {attrs.get('role') or ''}"
        if marks.strip() and _BOILERPLATE.search(marks):
            return
        level = _HEADINGS.get(tag)
        if level is not None:
            flush()
            heading = _ALL_WS.sub(" ", node.text()).strip()
            if heading:
                nonlocal stack
                stack = [(lv, h) for lv, h in stack if lv < level]
                stack.append((level, heading))
            return
        block = tag in _BLOCK
        if block:
            flush()
        for child in node.iter(include_text=True):
            walk(child)
        if block:
            flush()
        elif tag in ("td", "th"):
            buf.append(" ")

    if root is not None:
        walk(root)
        flush()
    if not title:
        h1 = next((h for lv, h in stack if lv == 1), None)
        title = h1
    return ParsedDocument(title or None, "html", blocks)


def _pdf(data: bytes) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        title = reader.metadata.title if reader.metadata else None
        blocks = [
            Block(p, (f"page {i}",))
            for i, page in enumerate(reader.pages, 1)
            for p in _paragraphs(page.extract_text() or "")
        ]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise ProcessingError(f"unreadable pdf: {type(exc).__name__}: {exc}") from None
    return ParsedDocument(str(title) if title else None, "pdf", blocks)


def _row_text(row: Any) -> str:
    if isinstance(row, dict):
        return "\n".join(f"{k}: {_scalar(v)}" for k, v in row.items() if v not in (None, ""))
    return _scalar(row)


def _scalar(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def _json(path: str, text: str, fmt: str) -> ParsedDocument:
    try:
        if fmt == "jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            value = json.loads(text)
            rows = value if isinstance(value, list) else [value]
    except json.JSONDecodeError as exc:
        raise ProcessingError(f"malformed json: {path}: {exc}") from None
    return ParsedDocument(None, fmt, [Block(_row_text(r)) for r in rows])


def _csv(path: str, text: str, fmt: str) -> ParsedDocument:
    try:
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if fmt == "tsv" else ",")
        rows = [dict(r) for r in reader]
    except csv.Error as exc:
        raise ProcessingError(f"malformed csv: {path}: {exc}") from None
    return ParsedDocument(None, fmt, [Block(_row_text(r)) for r in rows])
