"""Personal answers on real parts: a source PostgreSQL captured by logical replication
into profiles, a files source into the knowledge base (both through
``run_source``), their workers in threads, and /v1/ask.

Shows: two customers asking the same personal question never get each other's answer
(cached or not), and an edit of a source row followed by a ``fresh`` ask answers from
the new row (the cached answer built on the old profile is not served)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from headwater.config.loader import load_settings
from headwater.engine.runtime import bootstrap
from headwater.serving.app import create_app
from headwater.serving.ask import AskService
from headwater.storage.embedded import EmbeddedPostgres

from .conftest import ThreadedPipelines, new_database, query
from .test_cdc_postgres import _drop_slots, sql
from .test_serving_api import embedder  # noqa: F401 (session fixture)

pytestmark = pytest.mark.timeout(300)

QUESTION = "What is my loyalty tier, and may I use the lounge?"


@pytest.fixture
def source_db(pg_server: EmbeddedPostgres) -> Iterator[str]:
    dsn = new_database(pg_server, "src")
    sql(
        dsn,
        "CREATE TABLE customers (id int PRIMARY KEY, email text, first_name text,"
        " last_name text, loyalty_tier text)",
        "INSERT INTO customers VALUES (1, 'alice@example.com', 'Alice', 'Martin', 'platinum'),"
        " (2, 'bob@example.com', 'Bob', 'Dupont', 'bronze')",
    )
    yield dsn
    _drop_slots(dsn)


@pytest.fixture
def client(tmp_path: Path, dsn: str, source_db: str, embedder: Any) -> Iterator[TestClient]:  # noqa: F811
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "lounge.md").write_text(
        "# Lounge\n\nThe airport lounge is open to members of the top loyalty tier."
        " Other members may buy a day pass for 20 euros.\n"
    )
    cfg = tmp_path / "headwater.toml"
    cfg.write_text(
        f'[storage]\npostgres = "{dsn}"\n'
        "[serving.freshness]\ntimeout_s = 20\n"
        f'[[sources]]\nkind = "postgres"\nname = "crm"\ndsn = "{source_db}"\n'
        'tables = ["customers"]\nreplicate = false\n'
        f'[[sources]]\nkind = "files"\nname = "docs"\npath = "{folder}"\n'
        '[[profiles.tables]]\nsource = "crm"\ntable = "customers"\n'
        'identifiers = { email = "email" }\n'
        'attributes = { first_name = "given_name", last_name = "surname",'
        ' loyalty_tier = "loyalty_tier" }\n'
    )
    settings = load_settings(cfg)
    rt = bootstrap(settings, start=False)
    pipes = ThreadedPipelines(settings, rt, embedder)
    service = AskService(rt, embedder=embedder)
    deadline = time.monotonic() + 60
    while (
        query(rt.dsn, "SELECT count(*) FROM headwater_profiles.profiles")[0][0] < 2
        or query(rt.dsn, "SELECT count(*) FROM headwater_kb.documents")[0][0] < 1
    ):
        assert time.monotonic() < deadline, "profiles / knowledge base not built"
        time.sleep(0.1)
    try:
        yield TestClient(create_app(rt, ask_service=service))
    finally:
        pipes.close()
        service.close()
        rt.close()


def _ask(c: TestClient, **body: Any) -> Any:
    r = c.post("/v1/ask", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_customers_never_get_each_others_answer_and_fresh_reads_follow_a_source_row(
    client: TestClient, source_db: str
) -> None:
    alice = _ask(client, question=QUESTION, customer_id="alice@example.com")
    bob = _ask(client, question=QUESTION, customer_id="bob@example.com")
    assert alice["profile_fields"].get("loyalty_tier") == "platinum"
    assert "platinum" in alice["answer"] and "bronze" not in alice["answer"]
    assert bob["profile_fields"].get("loyalty_tier") == "bronze"
    assert "bronze" in bob["answer"] and "platinum" not in bob["answer"]
    assert alice["cache"] == bob["cache"] == "miss"  # Bob was not served Alice's entry
    assert alice["citations"] and alice["citations"][0]["doc_id"].endswith("lounge.md")
    for _ in range(2):  # cached now, each within its own scope
        a2 = _ask(client, question=QUESTION, customer_id="Alice@Example.com")
        b2 = _ask(client, question=QUESTION, customer_id="bob@example.com")
        assert (a2["cache"], b2["cache"]) == ("hit", "hit")
        assert a2["answer"] == alice["answer"] and b2["answer"] == bob["answer"]
    anon = _ask(client, question=QUESTION)
    assert anon["cache"] == "miss" and anon["profile_fields"] == {}
    assert "platinum" not in anon["answer"] and "bronze" not in anon["answer"]

    sql(source_db, "UPDATE customers SET loyalty_tier = 'diamond' WHERE id = 2")
    fresh = _ask(client, question=QUESTION, customer_id="bob@example.com", consistency="fresh")
    assert fresh["stale"] is False, fresh
    assert fresh["cache"] == "miss" and fresh["profile_fields"]["loyalty_tier"] == "diamond"
    assert "diamond" in fresh["answer"] and "bronze" not in fresh["answer"]
    assert fresh["as_of"]["profiles-crm.public.customers"] is not None
    assert _ask(client, question=QUESTION, customer_id="alice@example.com")["cache"] == "hit"
