"""FastAPI dependencies: the app's state, a database session per request, the caller."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from service import auth
from service.artifacts import ArtifactStore
from service.auth import Principal
from service.db.models import Job, Run
from service.errors import Conflict, Forbidden, NotFound, Unauthorized
from service.ingest import SummaryWriter
from service.jobs import JobBounds
from service.settings import Settings


@dataclass
class ApiState:
    """What every request may reach; built once by ``create_app``."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    artifacts: ArtifactStore
    user_digests: frozenset[str]
    summary_writer: SummaryWriter
    #: job token digest -> (principal, monotonic expiry): a hit skips the database. Entries
    #: expire so that a token revoked through another replica stops working within the TTL.
    principals: dict[str, tuple[Principal, float]] = field(default_factory=dict)
    principal_ttl_s: float = 5.0
    #: job id -> its segment; immutable, so summary ingest checks it without a query.
    job_bounds: dict[str, JobBounds] = field(default_factory=dict)
    #: job id -> monotonic time until which it is known to live (summary ingest's hot path
    #: checks liveness without a query); a job that ended never lives again.
    live_jobs: dict[str, float] = field(default_factory=dict)
    ended_jobs: dict[str, str] = field(default_factory=dict)
    job_liveness_ttl_s: float = 2.0

    def forget_token(self, token_sha256: str) -> None:
        """Drop a revoked token from the cache (this replica refuses it at once)."""
        self.principals.pop(token_sha256, None)

    def job_ended(self, job_id: str, reason: str) -> None:
        """Remember that a job ended (this replica refuses its token at once)."""
        self.ended_jobs[job_id] = reason
        self.live_jobs.pop(job_id, None)


# The dependencies that every worker post passes through are ``async def``: FastAPI runs a plain
# ``def`` dependency in its thread pool, and at thousands of posts per second those hops (three
# per request) and their contention for the GIL cost more than the work they wrap.


async def get_state(request: Request) -> ApiState:
    return request.app.state.gradpilot  # type: ignore[no-any-return]


State = Annotated[ApiState, Depends(get_state)]


def get_session(state: State) -> Iterator[Session]:
    """One transaction per request: committed by the route's service call, rolled back on error."""
    session = state.sessions()
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


DbSession = Annotated[Session, Depends(get_session)]
_bearer = HTTPBearer(auto_error=False, description="A user token, or a job's token (worker).")


async def get_principal(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise Unauthorized(
            "missing bearer token: send 'Authorization: Bearer <token>' (the CLI reads "
            "GRADPILOT_TOKEN, or the token file an embedded server writes)"
        )
    d = auth.digest(credentials.credentials)
    cached = state.principals.get(d)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]
    if auth.is_configured(d, state.user_digests):
        return auth.BUILTIN_ADMIN  # a configured user token: no database needed
    # Anything else is looked up in the database: in the thread pool, off the event loop.
    principal = await run_in_threadpool(_lookup, state, d)
    if principal is None:
        state.principals.pop(d, None)
        raise Unauthorized(
            "unknown or revoked token: ask an admin for a new one (`gradpilot tokens create`)"
        )
    if principal.kind == "job":
        state.principals[d] = (principal, time.monotonic() + state.principal_ttl_s)
    return principal


def _lookup(state: ApiState, d: str) -> Principal | None:
    with state.sessions() as session:
        return auth.lookup_digest(session, d, state.user_digests)


Caller = Annotated[Principal, Depends(get_principal)]


async def require_user(principal: Caller) -> Principal:
    if principal.kind != "user":
        raise Forbidden("a job token reaches only its own job's worker endpoints")
    return principal


User = Annotated[Principal, Depends(require_user)]


async def require_admin(principal: User) -> Principal:
    if not principal.is_admin:
        raise Forbidden("only an admin manages tokens; ask one to run `gradpilot tokens …`")
    return principal


Admin = Annotated[Principal, Depends(require_admin)]


async def require_job_access(job_id: str, principal: Caller, state: State) -> Principal:
    """A job token acts only for its own job; a user only for a job of a run they own (an
    admin for any). Another user's job is a 404, as if it did not exist."""
    if principal.kind == "job":
        if principal.job_id != job_id:
            raise Forbidden("this job token belongs to another job")
        return principal
    if principal.owner_filter is not None:
        owner = await run_in_threadpool(_job_owner, state, job_id)
        if owner != principal.owner_filter:
            raise NotFound(f"no job with id {job_id!r}")
    return principal


def _job_owner(state: ApiState, job_id: str) -> str | None:
    with state.sessions() as session:
        return session.execute(
            select(Run.owner_id).join(Job, Job.run_id == Run.id).where(Job.id == job_id)
        ).scalar_one_or_none()


JobCaller = Annotated[Principal, Depends(require_job_access)]


async def require_live_job(job_id: str, principal: JobCaller, state: State) -> Principal:
    """A job token works only while its job lives: once the job has ended (or a newer attempt
    of it exists) every worker call is refused with 409, which the worker takes as "stop"."""
    if principal.kind != "job":
        return principal
    reason = state.ended_jobs.get(job_id)
    if reason is None and state.live_jobs.get(job_id, 0.0) <= time.monotonic():
        reason = await run_in_threadpool(_end_reason, state, job_id)
        if reason is None:
            state.live_jobs[job_id] = time.monotonic() + state.job_liveness_ttl_s
        else:
            state.job_ended(job_id, reason)
    if reason is not None:
        raise Conflict(auth.ended_job_message(reason))
    return principal


def _end_reason(state: ApiState, job_id: str) -> str | None:
    with state.sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            return f"job {job_id} no longer exists"
        return auth.job_end_reason(session, job)


LiveJobCaller = Annotated[Principal, Depends(require_live_job)]
