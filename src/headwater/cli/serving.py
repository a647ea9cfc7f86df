"""``headwater ask`` and ``headwater key``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from headwater.config.loader import DEFAULT_CONFIG, load_settings
from headwater.config.serving import SCOPES

out = Console()

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Path to headwater.toml.")]


def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    customer: Annotated[
        str | None, typer.Option("--customer", help="Customer id, email, phone or alias.")
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Wait until the stores reflect every source write.")
    ] = False,
    k: Annotated[int | None, typer.Option(help="Passages to retrieve.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Bypass the cache.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the response as JSON.")] = False,
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Answer a question with citations (runs in this process against the running
    Headwater's database, as the API would)."""
    from headwater.engine.runtime import Runtime, open_log
    from headwater.serving.ask import AskQuery, AskService, BadRequest
    from headwater.serving.auth import Principal
    from headwater.storage.database import resolve_dsn

    settings = load_settings(config)
    dsn = resolve_dsn(settings, start=False)
    rt = Runtime(settings, dsn, open_log(settings, dsn))
    service = AskService(rt)
    try:
        res = service.ask(
            AskQuery(
                question,
                customer_id=customer,
                k=k,
                consistency="fresh" if fresh else "latest",
                cache="bypass" if no_cache else "use",
            ),
            Principal("cli", frozenset(SCOPES), "default"),
        )
    except BadRequest as exc:
        raise typer.BadParameter(str(exc)) from None
    finally:
        service.close()
        rt.close()
    if as_json:
        print(json.dumps(res, indent=2))
        return
    out.print(res["answer"], highlight=False, soft_wrap=True)
    if res["citations"]:
        out.print()
    for i, c in enumerate(res["citations"], 1):
        excerpt = " ".join(c["text"].split())
        excerpt = excerpt if len(excerpt) <= 160 else excerpt[:157] + "..."
        out.print(
            f"[{i}] {c['doc_id']} v{c['version']} ({c['source']}): {excerpt}",
            highlight=False,
            soft_wrap=True,
        )
    for field, value in res["profile_fields"].items():
        out.print(f"[profile] {field}: {value}", highlight=False)
    notes = [f"cache {res['cache']}", f"{res['timings_ms']['total']:.0f} ms"]
    if res.get("stale"):
        notes.append("STALE: the stores had not caught up within the freshness timeout")
    out.print("(" + ", ".join(notes) + ")", style="dim", highlight=False)


def key(
    name: Annotated[str, typer.Option(help="Who the key is for.")] = "app",
    scopes: Annotated[
        str, typer.Option(help=f"Comma-separated scopes of {', '.join(SCOPES)}.")
    ] = "ask,feedback",
    tenant: Annotated[str, typer.Option(help="Tenant whose cache it shares.")] = "default",
) -> None:
    """Make a new API key: prints the key (give it to the client; it is shown once) and
    the serving.auth.keys entry for headwater.toml (it holds only the SHA-256)."""
    from headwater.errors import ConfigError
    from headwater.serving.auth import new_key

    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SCOPES]
    if bad or not wanted:
        raise ConfigError(f"--scopes: unknown scope(s) {bad}; valid: {', '.join(SCOPES)}")
    raw, digest = new_key()
    print(f"key (shown once): {raw}")
    print()
    print("[[serving.auth.keys]]")
    print(f'name = "{name}"')
    print(f'sha256 = "{digest}"')
    print(f"scopes = {json.dumps(wanted)}")
    print(f'tenant = "{tenant}"')
