"""The API as uvicorn serves it in the ingest benchmark: ``create_app`` with settings from the
environment (``GRADPILOT_*``), as ``gradpilot serve`` builds them, for ``uvicorn --factory``."""

from __future__ import annotations

from fastapi import FastAPI


def make_app() -> FastAPI:
    from service.app import create_app
    from service.settings import Settings

    return create_app(Settings())
