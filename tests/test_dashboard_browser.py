"""The dashboard in a real headless Chromium (Debian's ``chromium``, installed by
``make browser``), driven by Playwright, against real parts started once for the module:
embedded PostgreSQL, a PostgreSQL source captured by logical replication into profiles,
a files source into the knowledge base (real MiniLM), their workers in threads, and the
API served by uvicorn on a loopback port.

Shows: live pipeline status; a question answered with citations, as-of and cache status,
and a thumbs-down with a comment that lands in the ``feedback`` topic; a customer's
profile with linked identities and the record each field came from; documents, chunks
and search with untrusted text shown as text; the API-key flow and visible 4xx errors.
Screenshots go to ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Browser, Page, expect, sync_playwright

from headwater.config.loader import load_settings
from headwater.engine.runtime import Runtime, bootstrap
from headwater.serving.app import create_app
from headwater.serving.ask import FEEDBACK, AskService
from headwater.serving.auth import new_key
from headwater.storage.embedded import EmbeddedPostgres
from headwater.testing import free_port

from .conftest import ThreadedPipelines, new_database, query
from .test_cdc_postgres import _drop_slots, sql
from .test_serving_api import embedder  # noqa: F401 (session fixture)

pytestmark = pytest.mark.timeout(180)

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "dashboard"
EVIL = '<img src=x onerror="document.title=1"><script>document.title=2</script>'
DOCS = {
    "refunds.md": "# Refunds\n\nRefunds are paid back to the original card within 14 days"
    " of the return. Store credit is issued at once.\n",
    "lounge.md": "# Lounge\n\nThe airport lounge is open to members of the platinum tier."
    " Other members may buy a day pass for 20 euros.\n",
    "billing.md": f"# Billing notes\n\nCard surcharges {EVIL} are waived for members.\n",
}


@dataclass
class Live:
    url: str
    keyed_url: str
    keys: dict[str, str]
    rt: Runtime


def _built(dsn: str) -> bool:
    """Both customers' profiles and every document are in the stores."""
    ((profiles, docs),) = query(
        dsn,
        "SELECT (SELECT count(*) FROM headwater_profiles.profiles),"
        " (SELECT count(*) FROM headwater_kb.documents)",
    )
    return bool(profiles >= 2 and docs >= len(DOCS))


def _serve(app: FastAPI) -> tuple[str, uvicorn.Server, threading.Thread]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert th.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, th


@pytest.fixture(scope="module")
def live(
    pg_server: EmbeddedPostgres,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: Any,  # noqa: F811
) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("dashboard")
    source_db = new_database(pg_server, "src")
    sql(
        source_db,
        "CREATE TABLE customers (id int PRIMARY KEY, email text, phone text,"
        " first_name text, last_name text, loyalty_tier text)",
        "INSERT INTO customers VALUES"
        " (1, 'alice@example.com', '+33612345678', 'Alice', 'Martin', 'platinum'),"
        " (2, 'bob@example.com', NULL, 'Bob', 'Dupont', 'bronze')",
    )
    folder = tmp / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    body = (
        f'[storage]\npostgres = "{new_database(pg_server)}"\n'
        f'[[sources]]\nkind = "postgres"\nname = "crm"\ndsn = "{source_db}"\n'
        'tables = ["customers"]\nreplicate = false\n'
        f'[[sources]]\nkind = "files"\nname = "docs"\npath = "{folder}"\n'
        '[[profiles.tables]]\nsource = "crm"\ntable = "customers"\n'
        'identifiers = { email = "email", phone = "phone" }\n'
        'attributes = { first_name = "given_name", last_name = "surname",'
        ' loyalty_tier = "loyalty_tier" }\n'
    )
    keys: dict[str, str] = {}
    entries = ""
    for name, scopes in (("ops", ["admin"]), ("app", ["ask", "feedback"])):
        keys[name], digest = new_key()
        entries += (
            f'[[serving.auth.keys]]\nname = "{name}"\nsha256 = "{digest}"\n'
            f"scopes = {json.dumps(scopes)}\n"
        )
    (tmp / "open.toml").write_text(body)
    (tmp / "keyed.toml").write_text(body + entries)
    settings = load_settings(tmp / "open.toml")
    rt = bootstrap(settings, start=False)
    keyed_rt = bootstrap(load_settings(tmp / "keyed.toml"), start=False)
    pipes = ThreadedPipelines(settings, rt, embedder)
    service = AskService(rt, embedder=embedder)
    servers = []
    try:
        deadline = time.monotonic() + 60
        while not _built(rt.dsn):
            assert time.monotonic() < deadline, "profiles / knowledge base not built"
            time.sleep(0.1)
        servers.append(_serve(create_app(rt, ask_service=service)))
        servers.append(_serve(create_app(keyed_rt, ask_service=service)))
        yield Live(servers[0][0], servers[1][0], keys, rt)
    finally:
        for _, server, th in servers:
            server.should_exit = True
            th.join(10)
        pipes.close()
        service.close()
        keyed_rt.close()
        rt.close()
        _drop_slots(source_db)
    assert not any(th.is_alive() for th in pipes.threads), "a source or worker did not stop"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    exe = os.environ.get("HEADWATER_CHROMIUM") or shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium not found: run 'make browser' (or set HEADWATER_CHROMIUM)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True)
        try:
            yield b
        finally:
            b.close()


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context (empty localStorage) per test; a full-page screenshot of
    where the test ended is kept in test-artifacts/dashboard/."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        _shot(pg, request.node.name)
        print(f"screenshots: {ARTIFACTS}")
        context.close()
    assert errors == [], errors  # no uncaught script error on the page


def test_pipelines_view_shows_live_status_of_every_pipeline(page: Page, live: Live) -> None:
    page.goto(live.url + "/")
    names = [p.name for p in live.rt.settings.all_pipelines()]
    for name in names:
        row = page.locator(f'#pipelines-table tr[data-pipeline="{name}"]')
        expect(row.locator(".state")).to_have_text("live")
        expect(row.locator(".lag")).to_have_text("0")
        expect(row.locator(".dlq")).to_contain_text("0")
    events = page.locator('tr[data-pipeline="profiles-crm.public.customers"] .events')
    expect(events).to_have_text("2")
    expect(page.locator('#sources-table tr[data-source="crm"]')).to_contain_text("done")
    expect(page.locator('#sources-table tr[data-source="docs"]')).to_contain_text("files")
    # live: the page polls; a new source row shows up without a reload
    sql(
        live.rt.settings.sources[0].dsn.get_secret_value(),
        "INSERT INTO customers VALUES (3, 'carol@example.com', NULL, 'Carol', 'Roy', 'gold')",
    )
    expect(events).to_have_text("3", timeout=20_000)
    expect(page.locator("#pipelines-table tbody tr")).to_have_count(len(names))


def test_ask_shows_a_cited_answer_and_feedback_lands_in_the_log(page: Page, live: Live) -> None:
    page.goto(live.url + "/#ask")
    page.fill("#ask-question", "How many days until a refund is paid back?")
    page.click("#ask-send")
    expect(page.locator("#answer-text")).to_contain_text("14 days")
    expect(page.locator("#answer-citations li").first).to_contain_text("refunds.md")
    expect(page.locator("#answer-cache")).to_have_text("miss")
    expect(page.locator("#answer-stale")).to_be_hidden()
    expect(page.locator("#answer-asof")).to_contain_text("kb-docs")
    conversation = page.locator("#answer-conversation").get_attribute("data-id")
    assert conversation

    expect(page.locator("#feedback-send")).to_be_disabled()  # a rating comes first
    page.click("#thumb-down")
    page.fill("#feedback-comment", "Which card? <b>be specific</b>")
    page.click("#feedback-send")
    expect(page.locator("#feedback-state")).to_have_text("Feedback recorded.")
    _shot(page, "answer-with-feedback")
    got = []
    for part in live.rt.log.partitions(FEEDBACK):
        for rec in live.rt.log.read(FEEDBACK, part.partition, part.start_offset):
            got.append(json.loads(rec.value or b"{}"))
    mine = [v for v in got if v["conversation_id"] == conversation]
    assert [(v["rating"], v["comment"]) for v in mine] == [(1, "Which card? <b>be specific</b>")]

    page.click("#ask-send")  # the same question again: served by the cache
    expect(page.locator("#answer-cache")).to_have_text("hit")
    expect(page.locator("#feedback-state")).to_have_text("")


def test_profile_viewer_shows_identities_and_field_lineage(page: Page, live: Live) -> None:
    page.goto(live.url + "/#profiles")
    page.fill("#profile-ref", "+33 6 12 34 56 78")  # any linked identifier finds her
    page.click("#profile-form button")
    tier = page.locator('#profile-attributes tr[data-field="loyalty_tier"]')
    expect(tier.locator(".value")).to_have_text("platinum")
    expect(tier.locator(".lineage")).to_have_text("crm:customers:1")
    identities = page.locator("#profile-identifiers tbody")
    expect(identities).to_contain_text("alice@example.com")
    expect(identities).to_contain_text("+33612345678")
    expect(page.locator("#profile-records")).to_have_text("crm:customers:1")
    expect(page.locator("#profile-asof")).to_contain_text("crm.public.customers")
    _shot(page, "profile")

    page.fill("#profile-ref", "nobody@example.com")
    page.click("#profile-form button")
    expect(page.locator("#view-profiles .error")).to_have_text(
        "404: no profile for that person id or identifier"
    )
    expect(page.locator("#profile")).to_be_hidden()


def test_knowledge_base_lists_documents_and_shows_untrusted_text_as_text(
    page: Page, live: Live
) -> None:
    page.goto(live.url + "/#knowledge")
    rows = page.locator("#documents-table tbody tr")
    expect(rows).to_have_count(len(DOCS))
    expect(page.locator("#documents-total")).to_contain_text(f"of {len(DOCS)}")
    page.fill("#search-q", "card surcharges")
    page.click("#search-form button")
    first = page.locator("#search-hits li").first
    expect(first).to_have_attribute("data-doc", "docs:billing.md")
    expect(first.locator("blockquote")).to_contain_text(EVIL)  # shown verbatim, as text
    first.locator("button").click()
    expect(page.locator("#document-title")).to_have_text("Billing notes")
    expect(page.locator("#document-chunks")).to_contain_text(EVIL)
    assert page.locator("main img, main script").count() == 0
    assert page.title() == "Headwater"  # no injected handler ran


def test_api_key_is_asked_for_kept_and_scope_errors_are_shown(page: Page, live: Live) -> None:
    page.goto(live.keyed_url + "/")
    expect(page.locator("#key-form")).to_be_visible()
    expect(page.locator("#key-state")).to_have_text("This server needs an API key.")
    expect(page.locator("#view-pipelines .error")).to_contain_text("401: missing API key")

    page.fill("#key-input", live.keys["app"])  # a key without the admin scope
    page.click("#key-form button[type=submit]")
    expect(page.locator("#view-pipelines .error")).to_have_text(
        "403: API key 'app' lacks scope 'admin' (it has ['ask', 'feedback'])"
    )
    page.click("#key-toggle")
    page.fill("#key-input", live.keys["ops"])
    page.click("#key-form button[type=submit]")
    expect(page.locator("#view-pipelines .error")).to_be_hidden()
    expect(page.locator("#pipelines-table tbody tr").first).to_contain_text("live")
    page.reload()  # the key is kept by the browser, never by the page
    expect(page.locator("#pipelines-table tbody tr").first).to_contain_text("live")
    assert live.keys["ops"] not in page.content()
    assert page.evaluate("localStorage.getItem('headwater.apiKey')") == live.keys["ops"]
