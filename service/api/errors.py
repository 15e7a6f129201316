"""One place that maps errors to HTTP responses with messages a person can act on, and that
documents those responses in the OpenAPI schema exactly as they are sent."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import GradpilotError
from service.schemas.fields import NO_NUL_PATTERN, NUL_MESSAGE

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """Every error but a validation error: one line saying what is wrong and what to do."""

    detail: str = Field(description="What is wrong and what to do, in one line.")


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the field (``request`` for the whole).")
    message: str


class ValidationErrorBody(BaseModel):
    """A 422: the request does not fit the schema, or asks for something that cannot be."""

    detail: str = Field(description="All the problems in one line.")
    errors: list[FieldError] = Field(default_factory=list, description="One entry per problem.")


def _location(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "request"


def _message(err: Any) -> str:
    if (
        err.get("type") == "string_pattern_mismatch"
        and (err.get("ctx") or {}).get("pattern") == NO_NUL_PATTERN
    ):
        return NUL_MESSAGE
    return str(err.get("msg", "invalid")).removeprefix("Value error, ")


def readable_validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    return [
        {"field": _location(tuple(err.get("loc", ()))), "message": _message(err)}
        for err in exc.errors()
    ]


def validation_body(errors: list[dict[str, str]]) -> dict[str, Any]:
    """The body of every 422 (``ValidationErrorBody``)."""
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:10])
    return {"detail": summary, "errors": errors}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GradpilotError)
    async def _ours(_request: Request, exc: GradpilotError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        if exc.status_code == 422:  # one shape for every 422
            body = {"detail": exc.message, "errors": [{"field": "request", "message": exc.message}]}
            return JSONResponse(body, status_code=422)
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405 and (allowed := _allowed_methods(request)):
            # Starlette names only the first route that matched the path; a path may have a
            # route per method (GET and POST /v1/runs), and Allow must list them all
            headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
            exc = StarletteHTTPException(405, exc.detail, headers=headers)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(readable_validation_errors(exc)), status_code=422)

    @app.exception_handler(UnicodeDecodeError)
    async def _encoding(_request: Request, exc: UnicodeDecodeError) -> JSONResponse:
        return JSONResponse({"detail": f"the request body is not valid UTF-8: {exc.reason}"}, 400)

    @app.exception_handler(OperationalError)
    async def _db_down(_request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", exc)
        return JSONResponse({"detail": "the database is unavailable; try again shortly"}, 503)


_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")


def _allowed_methods(request: Request) -> list[str]:
    """The methods the OpenAPI document gives the request's path (empty: not an API path)."""
    path = request.url.path
    for template, item in request.app.openapi().get("paths", {}).items():
        pattern = "[^/]+".join(re.escape(part) for part in re.split(r"\{[^}]+\}", template))
        if re.fullmatch(pattern, path):
            return sorted(m.upper() for m in item if m in _METHODS)
    return []


# ----------------------------------------------------------------------- the OpenAPI document

_DESCRIPTIONS = {
    "400": "The body is not UTF-8 JSON.",
    "401": "No bearer token, or an unknown one.",
    "403": "The token may not reach this operation (a job token outside its own job).",
    "404": "No such run or job (or version).",
    "409": "The request does not fit the current state (e.g. the job or run has ended).",
    "413": "The body is larger than GRADPILOT_MAX_BODY_BYTES.",
    "422": "The request does not fit the schema, or asks for what cannot be (see `errors`).",
    "502": "The artifact store or the executor failed.",
    "503": "The database is unavailable; try again shortly.",
}
#: operations that refuse a request that does not fit the state, by the end of their path
_CONFLICTS = ("/cancel", "/approve", "/reject", "/heartbeat", "/finish")
#: a job's worker operations answer 409 once the job has ended (its token no longer works)
_WORKER_PREFIX = "/v1/jobs/{job_id}/"
#: operations that read the artifact store
_ARTIFACTS = ("/report",)


def _response(code: str) -> dict[str, Any]:
    schema = "ValidationErrorBody" if code == "422" else "ErrorBody"
    return {
        "description": _DESCRIPTIONS[code],
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _no_nul(schema: dict[str, Any]) -> None:
    """Say in a parameter's schema that its strings may not hold NUL (refused on every URL)."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "string" and "pattern" not in option and "enum" not in option:
            option["pattern"] = NO_NUL_PATTERN


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Describe in ``schema`` (FastAPI's OpenAPI document) the error responses the API really
    sends: our 422 body instead of FastAPI's, and 400/401/403/404/409/413/502/503 on the
    operations that send them."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorBody, FieldError, ValidationErrorBody):
        components[model.__name__] = model.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if method not in _METHODS:
                continue
            codes = {"422"}  # NUL in the URL is refused on every path (``service.api.limits``)
            if op.get("security"):
                codes |= {"401", "403", "503"}
            elif path == "/readyz":
                codes.add("503")
            if "{" in path:
                codes.add("404")
            if "requestBody" in op:
                codes.add("400")
            if method == "post":
                codes.add("413")
            if path.endswith(_CONFLICTS) or path.startswith(_WORKER_PREFIX):
                codes.add("409")
            if path.endswith(_ARTIFACTS):
                codes.add("502")
            for param in op.get("parameters", ()):
                _no_nul(param.get("schema", {}))
            responses = op.setdefault("responses", {})
            for code in sorted(codes):
                responses[code] = _response(code)
    return schema
