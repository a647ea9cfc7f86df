"""The dashboard at ``/``: one HTML page, a stylesheet and a script, shipped as package
data and served by the API itself (no CDN, no build step, works offline).

The page holds no data and no secrets: it reads everything from the ``/v1`` API with
the key the user pastes (kept in the browser's localStorage). Its Content-Security-Policy
allows only this origin's script and style, no inline script, so text from documents
and answers can never run as code even if a view mishandled it.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException, Response

ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def asset(name: str) -> bytes:
    """The bytes of a bundled asset.

    Raises:
        KeyError: ``name`` is not one of :data:`ASSETS`.
    """
    if name not in ASSETS:
        raise KeyError(name)
    return files(__package__).joinpath("static", name).read_bytes()


def dashboard_router() -> APIRouter:
    """``GET /`` (the page) and ``GET /dashboard/{asset}``; open to every caller, as
    they hold nothing but code."""
    router = APIRouter(include_in_schema=False)

    def serve(name: str) -> Response:
        return Response(asset(name), media_type=ASSETS[name], headers=HEADERS)

    @router.get("/")
    def page() -> Response:
        return serve("index.html")

    @router.get("/dashboard/{name}")
    def static(name: str) -> Response:
        if name not in ASSETS or name == "index.html":
            raise HTTPException(404, "no such dashboard asset")
        return serve(name)

    return router
