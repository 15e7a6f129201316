"""The FastAPI application factory. Settings are passed in; nothing is read at import time."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from sqlalchemy.engine import Engine

from service import __version__, auth
from service.api.deps import ApiState
from service.api.errors import document_errors, install_error_handlers
from service.api.limits import RequestLimits
from service.api.routes import health, runs, tokens, worker
from service.artifacts import open_store
from service.db.session import make_engine, make_sessionmaker
from service.ingest import SummaryWriter
from service.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """gradpilot tunes neural networks the way an expert does: it reads the gradient
norms and learning curves of a training job, diagnoses the network, changes its
hyperparameters or rewrites its architecture, and trains again.

Every endpoint but `/healthz` and `/readyz` needs `Authorization: Bearer <token>`. A user
token reaches its user's runs (an admin's, every run); another user's run is a 404. Workers
use the token of their own job, which reaches only that job's endpoints while the job lives."""


def build_state(settings: Settings, engine: Engine | None = None) -> ApiState:
    settings.ensure_home()
    engine = engine or make_engine(settings.resolved_database_url)
    sessions = make_sessionmaker(engine)
    return ApiState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        artifacts=open_store(
            settings.resolved_artifact_url,
            endpoint_url=settings.aws_endpoint_url,
            region=settings.aws_region,
        ),
        user_digests=auth.configured_user_digests(settings),
        summary_writer=SummaryWriter(sessions),
    )


def create_api(settings: Settings, *, state: ApiState | None = None) -> FastAPI:
    """Build the REST API alone (``service.app.create_app`` adds the dashboard).

    The database must already be migrated (``gradpilot serve`` does that).
    """
    app: FastAPI = FastAPIOffline(
        title="gradpilot",
        version=__version__,
        description=DESCRIPTION,
    )
    app.state.gradpilot = state or build_state(settings)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(runs.router)
    app.include_router(worker.router)
    app.include_router(tokens.router)
    # load balancers and uptime checks probe with HEAD
    app.add_api_route(
        "/healthz", health.healthz, methods=["HEAD"], tags=["health"], summary="The process is up"
    )
    app.add_api_route(
        "/readyz",
        health.readyz,
        methods=["HEAD"],
        tags=["health"],
        summary="The database answers",
        response_model=None,
    )
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes)
    _document_errors(app)
    return app


def _document_errors(app: FastAPI) -> None:
    """The OpenAPI document with the error responses the API really sends."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
