"""The HTTP server: the dashboard at ``/``, ``/healthz``, Prometheus ``/metrics`` and the
``/v1`` API, each ``/v1`` router behind its scope (:func:`headwater.serving.auth.scoped`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from headwater import __version__
from headwater.engine.runtime import Runtime
from headwater.serving.api import install as install_ask
from headwater.serving.auth import scoped
from headwater.serving.dashboard import dashboard_router
from headwater.serving.documents import documents_router
from headwater.serving.metrics import PipelineCollector
from headwater.serving.pipelines import pipelines_router
from headwater.serving.profiles import router as profiles_router
from headwater.serving.search import search_router
from headwater.storage.database import connect


def create_app(rt: Runtime, *, ask_service: Any = None) -> FastAPI:
    app = FastAPI(title="Headwater", version=__version__, docs_url="/docs")
    install_ask(app, rt, ask_service)  # keys, body limit, /v1/ask, /v1/feedback
    registry = CollectorRegistry()
    registry.register(PipelineCollector(rt))
    app.include_router(search_router(rt), dependencies=scoped("search"))

    @app.get("/healthz")
    def healthz(response: Response) -> dict[str, Any]:
        """200 when the database answers, 503 otherwise."""
        try:
            with connect(rt.dsn, autocommit=True, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            response.status_code = 503
            return {"status": "unavailable", "error": type(exc).__name__}
        return {"status": "ok", "version": __version__, "log": rt.log.backend}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(profiles_router(rt), dependencies=scoped("profiles"))
    app.include_router(documents_router(rt), dependencies=scoped("search"))
    app.include_router(pipelines_router(rt), dependencies=scoped("admin"))
    app.include_router(dashboard_router())
    return app
