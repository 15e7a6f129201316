"""The dashboard's sign-in: a user token, posted once through a form, kept in an HttpOnly,
SameSite=Strict cookie (never in a URL), and checked on each request exactly as the API checks
a bearer token. Job tokens cannot sign in."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, Response

from service import auth
from service.api.deps import ApiState, State
from service.auth import Principal
from service.errors import Unauthorized

COOKIE = "gradpilot_token"
PREFIX = "/ui"
#: a signed-in browser stays signed in for a week (the token itself does not expire)
COOKIE_MAX_AGE_S = 7 * 24 * 3600


def principal_for(state: ApiState, token: str | None) -> Principal | None:
    """The user behind ``token``, or None when it is missing, unknown or a job's token."""
    if not token:
        return None
    with state.sessions() as session:
        principal = auth.lookup(session, token, state.user_digests)
    return principal if principal is not None and principal.kind == "user" else None


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
    """For pages: a browser without a valid cookie is sent to the sign-in form."""
    principal = principal_for(state, request.cookies.get(COOKIE))
    if principal is None:
        raise HTTPException(status_code=303, headers={"Location": login_url(request)})
    return principal


def require_asset_user(request: Request, state: State) -> Principal:
    """For images: no redirect (an ``<img>`` cannot follow one to a form), a plain 401."""
    principal = principal_for(state, request.cookies.get(COOKIE))
    if principal is None:
        raise Unauthorized("sign in to the dashboard first")
    return principal


PageUser = Annotated[Principal, Depends(require_page_user)]
AssetUser = Annotated[Principal, Depends(require_asset_user)]


def set_login_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=COOKIE_MAX_AGE_S,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_login_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
