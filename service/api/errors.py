"""One place that maps errors to HTTP responses with messages a person can act on."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from service.errors import GradpilotError

log = logging.getLogger(__name__)


def _location(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "request"


def readable_validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        msg = str(err.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
        out.append({"field": _location(tuple(err.get("loc", ()))), "message": msg})
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GradpilotError)
    async def _ours(_request: Request, exc: GradpilotError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = readable_validation_errors(exc)
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:10])
        return JSONResponse({"detail": summary, "errors": errors}, status_code=422)

    @app.exception_handler(UnicodeDecodeError)
    async def _encoding(_request: Request, exc: UnicodeDecodeError) -> JSONResponse:
        return JSONResponse({"detail": f"the request body is not valid UTF-8: {exc.reason}"}, 400)

    @app.exception_handler(OperationalError)
    async def _db_down(_request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", exc)
        return JSONResponse({"detail": "the database is unavailable; try again shortly"}, 503)
