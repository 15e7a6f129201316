"""User routes for runs: create, list, show, cancel, approve/reject, and what a run produced."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from service import jobs as job_ops
from service import runs as run_ops
from service.api.deps import DbSession, State, User
from service.auth import Principal
from service.db.models import Run
from service.errors import Forbidden, NotFound
from service.schemas.decisions import ArchitectureDiff, ArchitecturePublic, DecisionPublic
from service.schemas.fields import INT32_MAX
from service.schemas.jobs import JobPublic, JobsPublic
from service.schemas.runs import RejectBody, RunCreate, RunPublic, RunsPublic
from service.schemas.statuses import RunStatus
from service.schemas.summaries import EpochSummaryPublic

router = APIRouter(prefix="/v1/runs", tags=["runs"])


def _owner(user: Principal) -> str:
    if user.user_id is None:  # cannot happen: every user principal has a user
        raise Forbidden("this token belongs to no user; ask an admin for a new one")
    return user.user_id


def _run(session: Session, run_id: str, user: Principal, *, for_update: bool = False) -> Run:
    """The run if the caller may reach it (their own, or any for an admin); else 404."""
    return run_ops.get_run(session, run_id, for_update=for_update, owner_id=user.owner_filter)


@router.post("", status_code=201, summary="Create a run")
def create_run(body: RunCreate, state: State, session: DbSession, user: User) -> RunPublic:
    """Store the model and settings; the controller starts the agent and its first job. The
    run belongs to the caller."""
    run = run_ops.create_run(session, body, state.settings.advisor, owner_id=_owner(user))
    session.commit()
    return run_ops.run_public(session, run)


@router.get("", summary="List runs, newest first (yours; an admin's: every run)")
def list_runs(
    session: DbSession,
    user: User,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
) -> RunsPublic:
    data, count = run_ops.list_runs(
        session, status=status, limit=limit, offset=offset, owner_id=user.owner_filter
    )
    return RunsPublic(data=data, count=count)


@router.get("/{run_id}", summary="Show a run with its decisions")
def get_run(run_id: str, session: DbSession, user: User) -> RunPublic:
    return run_ops.run_public(session, _run(session, run_id, user))


@router.post("/{run_id}/cancel", summary="Cancel a run and its active job")
def cancel_run(run_id: str, session: DbSession, user: User) -> RunPublic:
    run = _run(session, run_id, user, for_update=True)
    run_ops.cancel_run(session, run)
    session.commit()
    return run_ops.run_public(session, run)


@router.post("/{run_id}/approve", summary="Approve the proposed change of a paused run")
def approve(run_id: str, session: DbSession, user: User) -> RunPublic:
    run = _run(session, run_id, user, for_update=True)
    run_ops.answer_approval(session, run, approved=True)
    session.commit()
    return run_ops.run_public(session, run)


@router.post("/{run_id}/reject", summary="Reject the proposed change, with feedback")
def reject(run_id: str, body: RejectBody, session: DbSession, user: User) -> RunPublic:
    """The feedback reaches the advisor's next proposal."""
    run = _run(session, run_id, user, for_update=True)
    run_ops.answer_approval(session, run, approved=False, feedback=body.feedback)
    session.commit()
    return run_ops.run_public(session, run)


@router.get("/{run_id}/jobs", summary="The run's jobs")
def run_jobs(run_id: str, session: DbSession, user: User) -> JobsPublic:
    _run(session, run_id, user)
    data = [JobPublic.model_validate(j) for j in job_ops.list_jobs(session, run_id)]
    return JobsPublic(data=data, count=len(data))


@router.get("/{run_id}/metrics", summary="Epoch summaries of the run")
def run_metrics(
    run_id: str,
    session: DbSession,
    user: User,
    since_epoch: Annotated[int | None, Query(ge=0, le=INT32_MAX)] = None,
) -> list[EpochSummaryPublic]:
    _run(session, run_id, user)
    return job_ops.metrics(session, run_id, since_epoch)


@router.get("/{run_id}/decisions", summary="The agent's decisions")
def run_decisions(run_id: str, session: DbSession, user: User) -> list[DecisionPublic]:
    _run(session, run_id, user)
    return run_ops.decisions(session, run_id)


@router.get("/{run_id}/architectures", summary="Every architecture version")
def run_architectures(run_id: str, session: DbSession, user: User) -> list[ArchitecturePublic]:
    _run(session, run_id, user)
    return run_ops.architectures(session, run_id)


@router.get("/{run_id}/diff", summary="Unified diff between two architecture versions")
def run_diff(
    run_id: str,
    session: DbSession,
    user: User,
    a: Annotated[
        int | None, Query(ge=0, le=INT32_MAX, description="Older version (default: newer - 1)")
    ] = None,
    b: Annotated[
        int | None, Query(ge=0, le=INT32_MAX, description="Newer version (default: latest)")
    ] = None,
) -> ArchitectureDiff:
    _run(session, run_id, user)
    return run_ops.architecture_diff(session, run_id, a, b)


@router.get("/{run_id}/report", summary="The run's Markdown report", response_class=Response)
def run_report(run_id: str, state: State, session: DbSession, user: User) -> Response:
    run = _run(session, run_id, user)
    if not run.report_uri:
        raise NotFound(
            f"run {run_id} has no report yet (status {run.status}); it is written when the run ends"
        )
    from service.artifacts import read_url

    body = read_url(
        run.report_uri,
        endpoint_url=state.settings.aws_endpoint_url,
        region=state.settings.aws_region,
    )
    return Response(body, media_type="text/markdown; charset=utf-8")


@router.get("/{run_id}/figure.png", summary="Four-panel figure of the run", response_class=Response)
def run_figure(run_id: str, session: DbSession, user: User) -> Response:
    from service.reports.figure import render_run_figure

    run = _run(session, run_id, user)
    png = render_run_figure(session, run)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
