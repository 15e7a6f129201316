"""The application as served: the REST API with the dashboard mounted beside it.

Composition lives here, above both ``service.api`` and ``service.web``, so that the API never
imports the dashboard (the dashboard reads through the API's state and dependencies).
"""

from __future__ import annotations

from fastapi import FastAPI

from service.api.app import create_api
from service.api.deps import ApiState
from service.settings import Settings
from service.web.routes import router as web_router


def create_app(settings: Settings, *, state: ApiState | None = None) -> FastAPI:
    """The API and the dashboard on one server. The database must already be migrated."""
    app = create_api(settings, state=state)
    app.include_router(web_router)
    return app
