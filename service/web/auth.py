"""The dashboard's sign-in: a server-side session per signed-in browser.

A user token is posted once through the form; the server checks it as the API would and
opens a session. The cookie holds only the session's random id (never the token); the server
keeps the id's SHA-256 with an expiry and the digest of the token that opened it, so that the
session ends at its expiry, at sign-out, or when that token is revoked or removed from the
settings. The cookie is HttpOnly, SameSite=Lax, and Secure whenever the public URL (or the
request) is https. Job tokens cannot sign in.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, Response
from sqlalchemy import delete

from service import auth
from service.api.deps import ApiState, State
from service.auth import Principal
from service.db.models import DashboardSession, utcnow
from service.errors import Unauthorized

COOKIE = "gradpilot_session"
PREFIX = "/ui"
#: a session ends this long after sign-in (the server enforces it; the cookie's max-age
#: only tells the browser when to forget it)
SESSION_TTL_S = 7 * 24 * 3600


def principal_for_token(state: ApiState, token: str | None) -> Principal | None:
    """The user behind ``token``, or None when it is missing, unknown, revoked or a job's."""
    if not token:
        return None
    with state.sessions() as session:
        principal = auth.lookup(session, token, state.user_digests)
    return principal if principal is not None and principal.kind == "user" else None


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def start_session(state: ApiState, token: str) -> str | None:
    """Open a session for a valid user token; returns the id for the cookie, or None."""
    principal = principal_for_token(state, token)
    if principal is None or principal.user_id is None:
        return None
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    with state.sessions() as session:
        # Expired sessions are swept here, at the rare moment one is made.
        session.execute(delete(DashboardSession).where(DashboardSession.expires_at < now))
        session.add(
            DashboardSession(
                id_sha256=auth.digest(session_id),
                token_sha256=auth.digest(token),
                user_id=principal.user_id,
                created_at=now,
                expires_at=now + timedelta(seconds=SESSION_TTL_S),
            )
        )
        session.commit()
    return session_id


def session_principal(state: ApiState, session_id: str | None) -> Principal | None:
    """The user of a live session, or None (no such session, expired, or its token is no
    longer valid)."""
    if not session_id:
        return None
    with state.sessions() as session:
        row = session.get(DashboardSession, auth.digest(session_id))
        if row is None:
            return None
        if _aware(row.expires_at) <= utcnow():
            session.delete(row)
            session.commit()
            return None
        principal = auth.lookup_digest(session, row.token_sha256, state.user_digests)
    return principal if principal is not None and principal.kind == "user" else None


def end_session(state: ApiState, session_id: str | None) -> None:
    if not session_id:
        return
    with state.sessions() as session:
        session.execute(
            delete(DashboardSession).where(DashboardSession.id_sha256 == auth.digest(session_id))
        )
        session.commit()


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a page of the dashboard (no open redirect)."""
    if (
        target
        and target.startswith(PREFIX + "/")
        and not target.startswith("//")
        and "\\" not in target
        and "//" not in target
    ):
        return target
    return f"{PREFIX}/runs"


def login_url(request: Request) -> str:
    path = request.url.path
    if request.url.query:
        path += "?" + request.url.query
    return f"{PREFIX}/login?next={quote(safe_next(path), safe='/')}"


def require_page_user(request: Request, state: State) -> Principal:
    """For pages: a browser without a live session is sent to the sign-in form."""
    principal = session_principal(state, request.cookies.get(COOKIE))
    if principal is None:
        raise HTTPException(status_code=303, headers={"Location": login_url(request)})
    return principal


def require_asset_user(request: Request, state: State) -> Principal:
    """For images: no redirect (an ``<img>`` cannot follow one to a form), a plain 401."""
    principal = session_principal(state, request.cookies.get(COOKIE))
    if principal is None:
        raise Unauthorized("sign in to the dashboard first")
    return principal


PageUser = Annotated[Principal, Depends(require_page_user)]
AssetUser = Annotated[Principal, Depends(require_asset_user)]


def _secure(state: ApiState, request: Request) -> bool:
    """Secure whenever users reach the server over https: behind a TLS proxy the request
    itself is plain http, so the public URL decides."""
    return state.settings.resolved_public_url.startswith("https://") or request.url.scheme == (
        "https"
    )


def set_session_cookie(response: Response, request: Request, state: ApiState, sid: str) -> None:
    response.set_cookie(
        COOKIE,
        sid,
        max_age=SESSION_TTL_S,
        path=PREFIX,
        httponly=True,
        samesite="lax",
        secure=_secure(state, request),
    )


def clear_session_cookie(response: Response, request: Request, state: ApiState) -> None:
    response.delete_cookie(
        COOKIE,
        path=PREFIX,
        httponly=True,
        samesite="lax",
        secure=_secure(state, request),
    )
