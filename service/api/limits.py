"""What a request may be before any work is spent on it: a bounded body, a URL without NUL.

A pure ASGI middleware, outside routing, parsing and authentication: FastAPI reads and parses a
body before it resolves the token, so without it an anonymous 300 MB POST is read whole into
memory. The declared ``Content-Length`` is checked before the first byte is read; a body
without one (chunked) is counted as it streams and cut off at the limit.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.schemas.fields import NUL_MESSAGE


def too_large_message(limit: int) -> str:
    return (
        f"the request body is larger than the limit of {limit} bytes: send less per request "
        "(the limit is the server's GRADPILOT_MAX_BODY_BYTES)"
    )


class RequestLimits:
    """Refuse oversized bodies (413) and NUL in the path or query (422) before the app runs."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope.get("path", "") or _has_nul(scope.get("query_string", b"")):
            where = "path" if "\x00" in scope.get("path", "") else "query"
            body = {"detail": f"{where}: {NUL_MESSAGE}", "errors": [
                {"field": where, "message": NUL_MESSAGE}
            ]}  # fmt: skip
            await _send_json(send, 422, body)
            return
        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_json(send, 413, {"detail": too_large_message(limit)})
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # an HTTPException passes through FastAPI's body parsing (anything else
                    # becomes its 400) to the exception middleware, which answers 413
                    raise HTTPException(413, too_large_message(limit))
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except HTTPException as e:
            # raised where no exception handler runs (e.g. in a middleware of the app's own)
            if e.status_code != 413 or started:
                raise
            await _send_json(send, 413, {"detail": e.detail})


def _has_nul(query: bytes) -> bool:
    return b"\x00" in query or b"%00" in query


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server (uvicorn) refuses a malformed length itself
    return None


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),  # the rest of the body is never read
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
