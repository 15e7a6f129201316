"""Bearer tokens and who they speak for. Stored only as SHA-256 digests; compared in constant
time.

A **user token** acts for its user: a ``user`` sees and acts on the runs they created, an
``admin`` on every run. Tokens from the settings (``GRADPILOT_API_TOKENS``) and the token file
an embedded server writes under its home belong to the built-in administrator, so a
single-user setup needs no user management. Tokens made with ``gradpilot tokens create`` live
in the database and can be revoked.

A **job token** is minted per job, handed to its worker, and reaches only that job's worker
endpoints, and only while the job lives: once the job has ended (succeeded, failed, cancelled)
or a newer attempt of it exists, the token is refused with 409 (see ``job_end_reason``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import BUILTIN_ADMIN_ID, ApiToken, Job, User
from service.schemas.statuses import TERMINAL_JOB_STATUSES
from service.settings import Settings

Role = Literal["admin", "user"]
ROLES: tuple[Role, ...] = ("admin", "user")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (with a role), or the worker of one job."""

    kind: Literal["user", "job"]
    job_id: str | None = None
    user_id: str | None = None
    role: Role = "user"
    #: the database token's id (None for a token from the settings or the token file)
    token_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "user" and self.role == "admin"

    @property
    def owner_filter(self) -> str | None:
        """The owner whose runs this caller may reach; None means every run (an admin)."""
        return None if self.is_admin else self.user_id


#: The principal of every configured token (settings, token file).
BUILTIN_ADMIN = Principal("user", user_id=BUILTIN_ADMIN_ID, role="admin")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def ensure_local_token(settings: Settings) -> str | None:
    """On a loopback server with no configured token, create (once) and return a token file's
    token so that the CLI on the same machine finds it; otherwise None."""
    if settings.api_tokens or not settings.is_loopback():
        return None
    settings.ensure_home()
    path = settings.token_file
    if path.exists():
        return path.read_text().strip()
    token = new_token()
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token


def configured_user_digests(settings: Settings) -> frozenset[str]:
    tokens = [t.get_secret_value() for t in settings.api_tokens]
    local = ensure_local_token(settings)
    if local:
        tokens.append(local)
    return frozenset(digest(t) for t in tokens)


def mint_job_token(session: Session, job_id: str) -> str:
    """Create a token for one job's worker; the caller commits."""
    token = new_token()
    session.add(
        ApiToken(token_sha256=digest(token), kind="job", job_id=job_id, name=f"job {job_id}")
    )
    return token


def is_configured(d: str, user_digests: frozenset[str]) -> bool:
    """Whether the digest is one of the configured (built-in admin) tokens."""
    # Every entry is compared, so the time taken does not say which one matched.
    return any([hmac.compare_digest(known, d) for known in user_digests])


def lookup_digest(session: Session, d: str, user_digests: frozenset[str]) -> Principal | None:
    """The principal behind a token digest; None when it is unknown or revoked."""
    if is_configured(d, user_digests):
        return BUILTIN_ADMIN
    row = session.execute(
        select(ApiToken, User.role)
        .outerjoin(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_sha256 == d)
    ).one_or_none()
    if row is None:
        return None
    token, role = row
    if token.revoked_at is not None:
        return None
    if token.kind == "job":
        return Principal("job", job_id=token.job_id, token_id=token.id)
    if token.user_id is None or role not in ROLES:
        return None  # a user token whose user is gone
    return Principal("user", user_id=token.user_id, role=role, token_id=token.id)


def lookup(session: Session, token: str, user_digests: frozenset[str]) -> Principal | None:
    return lookup_digest(session, digest(token), user_digests)


def job_end_reason(session: Session, job: Job) -> str | None:
    """Why this job's token no longer works, or None while the job lives.

    A job has ended when it reached a terminal status or when a newer attempt of the same
    generation exists (the controller gave up on it and started another)."""
    if job.status in TERMINAL_JOB_STATUSES:
        return f"job {job.id} has ended ({job.status})"
    newer = session.execute(
        select(Job.attempt)
        .where(
            Job.run_id == job.run_id,
            Job.generation == job.generation,
            Job.attempt > job.attempt,
        )
        .limit(1)
    ).scalar_one_or_none()
    if newer is not None:
        return f"job {job.id} was superseded by attempt {newer}"
    return None


def ended_job_message(reason: str) -> str:
    """The 409 a worker of an ended job gets: stop, do not retry."""
    return f"{reason}; its job token no longer works: stop this worker, do not retry"
