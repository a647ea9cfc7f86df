"""``headwater profiles``: look up unified customer profiles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from headwater.config.loader import DEFAULT_CONFIG, load_settings

app = typer.Typer(help="Unified customer profiles.", no_args_is_help=True)
out = Console()


@app.command()
def get(
    ref: Annotated[str, typer.Argument(help="Person id, alias, email, phone or record id.")],
    config: Annotated[Path, typer.Option("--config", "-c", help="Path to headwater.toml.")] = (
        DEFAULT_CONFIG
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print the profile of a person (exit 1 when none matches)."""
    from headwater.profiles.store import get_profile
    from headwater.storage.database import connect, resolve_dsn

    settings = load_settings(config)
    region = settings.profiles.default_region if settings.profiles else "US"
    with connect(resolve_dsn(settings, start=False), autocommit=True) as conn:
        p = get_profile(conn, ref, region=region)
    if p is None:
        Console(stderr=True).print(f"no profile for {ref!r}", highlight=False)
        raise typer.Exit(1)
    if as_json:
        body = {"person_id": p.person_id, "version": p.version, "profile": p.profile}
        print(json.dumps({**body, "as_of": p.as_of}, indent=2, default=str))
        return
    t = Table(title=f"{p.person_id} (version {p.version})")
    t.add_column("field")
    t.add_column("value")
    t.add_column("from")
    for name, a in p.profile["attributes"].items():
        t.add_row(name, str(a["value"]), a["source"])
    for i in p.profile["identifiers"]:
        t.add_row(i["kind"], i["value"], ", ".join(i["sources"]))
    for name, agg in p.profile["facts"].items():
        summary = f"{agg['count']} (amount {agg['amount']}, last {agg['last']})"
        t.add_row(name, summary, f"{len(agg['upcoming'])} upcoming")
    t.add_row("records", ", ".join(p.profile["records"]), "")
    t.add_row("as of", ", ".join(f"{k}@{v}" for k, v in p.as_of.items()), "")
    out.print(t)


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="Path to headwater.toml.")] = (
        DEFAULT_CONFIG
    ),
) -> None:
    """Estimate m/u from the graph's records (EM), store them and re-score all links."""
    from headwater.errors import ConfigError
    from headwater.profiles.train import train as run_train
    from headwater.storage.database import connect, resolve_dsn

    settings = load_settings(config)
    if settings.profiles is None:
        raise ConfigError(f"{config}: no [profiles] section; add one to map tables to persons")
    cfg = settings.profiles_pipelines()[0].profiles
    with connect(resolve_dsn(settings, start=False)) as conn:
        model, persons = run_train(conn, cfg)
    out.print(f"trained on the graph: prior {model.prior:.2e}; {persons} persons rebuilt")
