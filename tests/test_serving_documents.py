"""``GET /v1/documents`` and ``GET /v1/documents/{doc_id}`` on a real PostgreSQL, the
knowledge base's rows written as the knowledge processor writes them.

Shows: newest changes first with exact chunk counts, the source filter and paging, a
document's chunks in order, 404 for an unknown document, and the ``search`` scope."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from headwater.config.loader import load_settings
from headwater.engine.runtime import bootstrap
from headwater.serving.app import create_app
from headwater.serving.auth import new_key

from .conftest import query

pytestmark = pytest.mark.timeout(60)

DOCS = [  # doc_id, source, title, version, changed (minutes ago), chunk texts
    ("docs:guides/refunds.md", "docs", "Refunds", 3, 1, ["Refunds take 3 days.", "Credit."]),
    ("docs:shipping.md", "docs", "Shipping", 1, 30, ["Ships from Lyon."]),
    ("wiki:faq", "wiki", None, 7, 5, ["A", "B", "C"]),
]


@pytest.fixture
def client(tmp_path: Path, dsn: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    keys: dict[str, str] = {}
    entries = ""
    for name, scopes in (("reader", ["search"]), ("app", ["ask", "feedback", "profiles"])):
        keys[name], digest = new_key()
        entries += (
            f'[[serving.auth.keys]]\nname = "{name}"\nsha256 = "{digest}"\n'
            f"scopes = {json.dumps(scopes)}\n"
        )
    cfg = tmp_path / "headwater.toml"
    cfg.write_text(f'[storage]\npostgres = "{dsn}"\n{entries}')
    rt = bootstrap(load_settings(cfg), start=False)
    for doc_id, source, title, version, minutes, texts in DOCS:
        query(
            dsn,
            "INSERT INTO headwater_kb.documents (doc_id, source, uri, title, version,"
            " content_hash, position, updated_at) VALUES (%s, %s, %s, %s, %s, 'h', %s,"
            " now() - make_interval(mins => %s)) RETURNING 1",
            (doc_id, source, doc_id.split(":", 1)[1], title, version, f"v{version}", minutes),
        )
        for i, text in enumerate(texts):
            query(
                dsn,
                "INSERT INTO headwater_kb.chunks (chunk_id, doc_id, version, ordinal, text,"
                " headings, text_hash, model) VALUES (%s, %s, %s, %s, %s, %s, 'x', 'm')"
                " RETURNING 1",
                (f"{doc_id}#{i}", doc_id, version, i, text, [title or "faq"]),
            )
    try:
        yield TestClient(create_app(rt, ask_service=object())), keys
    finally:
        rt.close()


def test_documents_newest_changes_first_with_chunk_counts(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    c, keys = client
    auth = {"Authorization": f"Bearer {keys['reader']}"}
    body = c.get("/v1/documents", headers=auth).json()
    assert body["total"] == 3
    assert [(d["doc_id"], d["chunks"], d["version"]) for d in body["documents"]] == [
        ("docs:guides/refunds.md", 2, 3),
        ("wiki:faq", 3, 7),
        ("docs:shipping.md", 1, 1),
    ]
    assert body["documents"][0]["position"] == "v3" and body["documents"][1]["title"] is None

    docs = c.get("/v1/documents?source=docs&limit=1&offset=1", headers=auth).json()
    assert docs["total"] == 2 and [d["doc_id"] for d in docs["documents"]] == ["docs:shipping.md"]

    one = c.get("/v1/documents/docs:guides/refunds.md", headers=auth).json()
    assert one["document"]["uri"] == "guides/refunds.md"
    assert [(x["ordinal"], x["text"]) for x in one["chunks"]] == [
        (0, "Refunds take 3 days."),
        (1, "Credit."),
    ]
    missing = c.get("/v1/documents/docs:nope.md", headers=auth)
    assert missing.status_code == 404 and "no document" in missing.json()["detail"]
    assert c.get("/v1/documents?limit=0", headers=auth).status_code == 422


def test_documents_need_the_search_scope(client: tuple[TestClient, dict[str, str]]) -> None:
    c, keys = client
    assert c.get("/v1/documents").status_code == 401
    r = c.get("/v1/documents", headers={"Authorization": f"Bearer {keys['app']}"})
    assert r.status_code == 403 and "search" in r.json()["detail"]
