"""FastAPI dependencies: the app's state, a database session per request, the caller."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from service import auth
from service.artifacts import ArtifactStore
from service.auth import Principal
from service.errors import Forbidden, Unauthorized
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
    #: token digest -> principal; job tokens never change, so a hit skips the database.
    principals: dict[str, Principal] = field(default_factory=dict)
    #: job id -> its segment; immutable, so summary ingest checks it without a query.
    job_bounds: dict[str, JobBounds] = field(default_factory=dict)


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
    token = credentials.credentials
    d = auth.digest(token)
    cached = state.principals.get(d)
    if cached is not None:
        return cached
    if any(hmac.compare_digest(known, d) for known in state.user_digests):
        return Principal("user")  # a configured user token: no database needed
    # Anything else is looked up in the database: in the thread pool, off the event loop.
    principal = await run_in_threadpool(_lookup, state, token)
    if principal is None:
        raise Unauthorized("unknown or revoked token")
    if principal.kind == "job":
        state.principals[d] = principal
    return principal


def _lookup(state: ApiState, token: str) -> Principal | None:
    with state.sessions() as session:
        return auth.lookup(session, token, state.user_digests)


Caller = Annotated[Principal, Depends(get_principal)]


async def require_user(principal: Caller) -> Principal:
    if principal.kind != "user":
        raise Forbidden("a job token reaches only its own job's worker endpoints")
    return principal


User = Annotated[Principal, Depends(require_user)]


async def require_job_access(job_id: str, principal: Caller) -> Principal:
    """Users may act for any job; a job token only for its own."""
    if principal.kind == "job" and principal.job_id != job_id:
        raise Forbidden("this job token belongs to another job")
    return principal


JobCaller = Annotated[Principal, Depends(require_job_access)]
