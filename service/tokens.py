"""User tokens, managed by an admin (``/v1/tokens``, ``gradpilot tokens``): create, list,
revoke. A token is stored only as its SHA-256; its value is shown once, when it is made.
Callers own the transaction."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service import auth
from service.db.models import ApiToken, DashboardSession, User, utcnow
from service.errors import Conflict, InvalidInput, NotFound
from service.schemas.tokens import TokenCreate, TokenCreated, TokenPublic


def _public(token: ApiToken, user: User | None) -> TokenPublic:
    return TokenPublic.model_validate(
        {
            "id": token.id,
            "kind": token.kind,
            "name": token.name,
            "user_id": token.user_id,
            "user": user.name if user else None,
            "role": user.role if user else None,
            "job_id": token.job_id,
            "created_at": token.created_at,
            "revoked_at": token.revoked_at,
        }
    )


def get_or_create_user(session: Session, name: str, role: str | None) -> User:
    user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
    if user is None:
        user = User(name=name, role=role or "user")
        session.add(user)
        session.flush()
    elif role is not None and role != user.role:
        raise InvalidInput(
            f"user {name!r} already exists with role {user.role!r}; leave out --role, "
            "or pick another user name"
        )
    return user


def create_token(session: Session, body: TokenCreate) -> TokenCreated:
    """A new token for ``body.user`` (made if new); the answer carries the raw token."""
    user = get_or_create_user(session, body.user, body.role)
    raw = auth.new_token()
    token = ApiToken(
        token_sha256=auth.digest(raw), kind="user", user_id=user.id, name=body.name or ""
    )
    session.add(token)
    session.flush()
    return TokenCreated.model_validate({**_public(token, user).model_dump(), "token": raw})


def list_tokens(
    session: Session, *, include_jobs: bool = False, include_revoked: bool = True
) -> list[TokenPublic]:
    stmt = select(ApiToken, User).outerjoin(User, User.id == ApiToken.user_id)
    if not include_jobs:
        stmt = stmt.where(ApiToken.kind == "user")
    if not include_revoked:
        stmt = stmt.where(ApiToken.revoked_at.is_(None))
    rows = session.execute(stmt.order_by(ApiToken.created_at, ApiToken.id)).tuples()
    return [_public(token, user) for token, user in rows]


def revoke_token(session: Session, token_id: str) -> tuple[TokenPublic, str]:
    """Mark a token revoked and end the dashboard sessions it opened; returns the token and
    its digest (for the caller's cache)."""
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"no token with id {token_id!r}; `gradpilot tokens list` shows them")
    if token.revoked_at is not None:
        raise Conflict(f"token {token_id} was already revoked at {token.revoked_at:%Y-%m-%d %H:%M}")
    token.revoked_at = utcnow()
    session.execute(
        delete(DashboardSession).where(DashboardSession.token_sha256 == token.token_sha256)
    )
    user = session.get(User, token.user_id) if token.user_id else None
    return _public(token, user), token.token_sha256
