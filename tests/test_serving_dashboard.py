"""The dashboard's assets as served: bundled, offline, locked down by CSP, no secrets.

What the page does in a browser is shown by ``test_dashboard_browser.py``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from headwater.config.loader import load_settings
from headwater.engine.runtime import bootstrap
from headwater.serving.app import create_app
from headwater.serving.auth import new_key
from headwater.serving.dashboard import ASSETS, asset

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def client(tmp_path: Path, dsn: str) -> Iterator[TestClient]:
    _, digest = new_key()
    cfg = tmp_path / "headwater.toml"
    cfg.write_text(
        f'[storage]\npostgres = "{dsn}"\n'
        f'[[serving.auth.keys]]\nname = "ops"\nsha256 = "{digest}"\nscopes = ["admin"]\n'
    )
    rt = bootstrap(load_settings(cfg), start=False)
    try:
        yield TestClient(create_app(rt, ask_service=object()))
    finally:
        rt.close()


def test_page_and_assets_are_served_without_a_key_under_a_strict_csp(client: TestClient) -> None:
    page = client.get("/")  # keys are configured, and yet the page needs none: it holds no data
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for src in re.findall(r'(?:src|href)="([^"#]+)"', page.text):
        r = client.get(src)
        assert r.status_code == 200, src
        assert r.headers["content-security-policy"] == csp
    assert client.get("/dashboard/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/dashboard/nope.js").status_code == 404
    assert client.get("/dashboard/..%2Fapp.py").status_code == 404
    assert client.get("/v1/pipelines").status_code == 401  # the data behind it still needs one
    paths = set(client.get("/openapi.json").json()["paths"])
    assert {"/v1/pipelines", "/v1/documents", "/v1/documents/{doc_id}"} <= paths
    assert "/" not in paths and "/dashboard/{name}" not in paths


def test_assets_are_offline_and_never_build_html_from_text() -> None:
    for name in ASSETS:
        text = asset(name).decode()
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), name  # no CDN
    js = asset("app.js").decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js
    with pytest.raises(KeyError):
        asset("../__init__.py")
