"""``headwater search``: hybrid search over the knowledge base."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from headwater.config.loader import DEFAULT_CONFIG, load_settings


def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    config: Annotated[Path, typer.Option("--config", "-c", help="Path to headwater.toml.")] = (
        DEFAULT_CONFIG
    ),
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=100, help="Hits to return.")] = 5,
    source: Annotated[str | None, typer.Option(help="Only this document source.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Search the knowledge base (vector + full text, fused by reciprocal rank)."""
    from headwater.knowledge.embedder import load_embedder
    from headwater.knowledge.search import search as run_search
    from headwater.storage.database import connect, resolve_dsn

    settings = load_settings(config)
    dsn = resolve_dsn(settings, start=False)
    embedder = load_embedder(settings.knowledge.embedder)
    with connect(dsn) as conn:
        hits = run_search(
            conn, embedder, query, k=k, filters={"source": source} if source else None
        )
    if as_json:
        print(json.dumps({"hits": [h.to_json() for h in hits]}, indent=2))
        return
    out = Console()
    if not hits:
        out.print("no hits")
    for i, h in enumerate(hits, 1):
        where = " > ".join(h.headings)
        out.print(f"[bold]{i}. {h.title or h.doc_id}[/bold]  {h.uri}  v{h.version}  {h.score:.4f}")
        if where:
            out.print(f"   [dim]{where}[/dim]")
        out.print(f"   {h.text[:300]}", highlight=False)
