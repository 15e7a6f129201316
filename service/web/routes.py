"""The dashboard: server-rendered pages under ``/ui`` over the same services as the REST API.

Pages: sign-in, the runs list, and a run page with its status, figure, decisions timeline,
architecture diffs and report. A page of an active run reloads itself every few seconds
(a meta refresh; there is no JavaScript to build).
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session

from service import jobs as job_ops
from service import runs as run_ops
from service.api.deps import DbSession, State
from service.artifacts import read_url
from service.errors import GradpilotError, NotFound
from service.schemas.statuses import TERMINAL_RUN_STATUSES
from service.web import markup
from service.web.auth import (
    COOKIE,
    PREFIX,
    AssetUser,
    PageUser,
    clear_session_cookie,
    end_session,
    safe_next,
    session_principal,
    set_session_cookie,
    start_session,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
#: seconds between reloads of a page that shows an active run
REFRESH_S = 3
STATIC = {p.name: p for p in (HERE / "static").glob("*") if p.is_file()}
MEDIA_TYPES = {".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}

#: the pages run no script at all; a policy that forbids scripts backs up the escaping
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def _when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=_pct, when=_when, diff=markup.diff_html, pretty=markup.pretty_json)
    env.globals.update(base=PREFIX)
    return env


templates = Jinja2Templates(env=_environment())


def _page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    # pages show live state and come from a signed-in session: never cache them
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(SECURITY_HEADERS)
    return response


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
def home() -> Response:
    return RedirectResponse(f"{PREFIX}/runs", status_code=303)


@router.get("/static/{name}")
def static(name: str) -> Response:
    path = STATIC.get(name)
    if path is None:
        raise NotFound(f"no static file {name!r}")
    return Response(
        path.read_bytes(),
        media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
        headers={"Cache-Control": "max-age=3600"},
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, state: State, next: str | None = None) -> Response:
    if session_principal(state, request.cookies.get(COOKIE)) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _page(request, "login.html", {"next": safe_next(next), "error": None})


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    state: State,
    token: Annotated[str, Form(max_length=1000)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Check the token as the API would; a user token opens a server-side session whose
    random id (not the token) goes in the cookie."""
    token = token.strip()
    session_id = start_session(state, token) if token else None
    if session_id is None:
        error = (
            "Enter a user token (GRADPILOT_API_TOKENS, or the token file of an embedded server)."
            if not token
            else "That token is not a valid user token. Job tokens cannot sign in."
        )
        return _page(
            request, "login.html", {"next": safe_next(next), "error": error}, status_code=401
        )
    response = RedirectResponse(safe_next(next), status_code=303)
    set_session_cookie(response, request, state, session_id)
    return response


@router.post("/logout")
def logout(request: Request, state: State) -> Response:
    """End the session on the server (a copied cookie stops working too) and clear it."""
    end_session(state, request.cookies.get(COOKIE))
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    clear_session_cookie(response, request, state)
    return response


@router.get("/runs", response_class=HTMLResponse)
def runs_page(request: Request, session: DbSession, user: PageUser) -> Response:
    runs, count = run_ops.list_runs(
        session, status=None, limit=200, offset=0, owner_id=user.owner_filter
    )
    active = any(r.status not in TERMINAL_RUN_STATUSES for r in runs)
    return _page(
        request,
        "runs.html",
        {"runs": runs, "count": count, "refresh": REFRESH_S if active else None},
    )


def _report(state: State, report_uri: str | None, figure_url: str) -> tuple[Any, str | None]:
    """The report as HTML, or why it cannot be shown."""
    if not report_uri:
        return None, None
    try:
        text = read_url(
            report_uri,
            endpoint_url=state.settings.aws_endpoint_url,
            region=state.settings.aws_region,
        ).decode("utf-8", errors="replace")
    except GradpilotError as e:
        log.warning("cannot read the report %s: %s", report_uri, e.message)
        return None, f"the report could not be read: {e.message}"
    return markup.report_html(text, figure_url=figure_url), None


def _versions(session: Session, run_id: str) -> list[dict[str, Any]]:
    """Each architecture version with the diff from its parent."""
    archs = run_ops.architectures(session, run_id)
    by_version = {a.version: a for a in archs}
    out = []
    for a in archs:
        parent_v = a.parent_version if a.parent_version is not None else a.version - 1
        parent = by_version.get(parent_v) if a.version > 0 else None
        diff = (
            run_ops.unified_diff(
                parent.source, a.source, f"v{parent.version}/model.py", f"v{a.version}/model.py"
            )
            if parent is not None
            else None
        )
        out.append({"arch": a, "parent": parent.version if parent else None, "diff": diff})
    return out


def _changes(changes: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(name, new value, reason) of a decision's changes, whatever their shape."""
    rows = []
    for key, value in changes.items():
        if isinstance(value, dict) and "value" in value:
            rows.append((key, value["value"], str(value.get("reason") or "")))
        else:
            rows.append((key, value, ""))
    return rows


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(
    run_id: str, request: Request, state: State, session: DbSession, user: PageUser
) -> Response:
    try:
        run = run_ops.get_run(session, run_id, owner_id=user.owner_filter)
    except NotFound as e:
        return _page(request, "error.html", {"message": e.message}, status_code=404)
    public = run_ops.run_public(session, run)
    jobs = job_ops.list_jobs(session, run.id)
    current = jobs[-1] if jobs else None
    latest = None
    if current is not None:
        recent = job_ops.metrics(session, run.id, since_epoch=current.epoch_start)
        latest = recent[-1] if recent else None
    figure_url = f"{PREFIX}/runs/{run.id}/figure.png"
    report, report_error = _report(state, run.report_uri, figure_url)
    decisions = [
        {
            "d": d,
            "issues": d.diagnostics.get("issues") or [],
            "notes": d.diagnostics.get("notes") or [],
            "changes": _changes(d.changes),
            "diagnostics": {k: v for k, v in d.diagnostics.items() if k not in ("layers", "notes")},
        }
        for d in public.decisions
    ]
    active = run.status not in TERMINAL_RUN_STATUSES
    return _page(
        request,
        "run.html",
        {
            "run": public,
            "jobs": jobs,
            "current": current,
            "latest": latest,
            "decisions": decisions,
            "versions": _versions(session, run.id),
            "report": report,
            "report_error": report_error,
            "figure_url": figure_url,
            "refresh": REFRESH_S if active else None,
        },
    )


@router.get("/runs/{run_id}/figure.png")
def run_figure(run_id: str, session: DbSession, user: AssetUser) -> Response:
    from service.reports.figure import render_run_figure

    run = run_ops.get_run(session, run_id, owner_id=user.owner_filter)
    return Response(
        render_run_figure(session, run),
        media_type="image/png",
        headers={"Cache-Control": "no-store"},
    )
