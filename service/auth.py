"""Bearer tokens. Stored only as SHA-256 digests; compared in constant time.

User tokens come from the settings (``GRADPILOT_API_TOKENS``), from the token file that an
embedded server writes under its home, or from the database. Job tokens are minted per job,
handed to the worker in its environment, and reach only that job's worker endpoints.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import ApiToken
from service.settings import Settings


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, or the worker of one job."""

    kind: Literal["user", "job"]
    job_id: str | None = None


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


def lookup(session: Session, token: str, user_digests: frozenset[str]) -> Principal | None:
    d = digest(token)
    for known in user_digests:
        if hmac.compare_digest(known, d):
            return Principal("user")
    row = session.execute(select(ApiToken).where(ApiToken.token_sha256 == d)).scalar_one_or_none()
    if row is None:
        return None
    return Principal("job", row.job_id) if row.kind == "job" else Principal("user")
