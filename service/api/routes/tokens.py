"""Admin routes for user tokens: create (the raw token is in this answer only), list, revoke."""

from __future__ import annotations

from fastapi import APIRouter

from service import tokens as token_ops
from service.api.deps import Admin, DbSession, State
from service.schemas.tokens import TokenCreate, TokenCreated, TokenPublic, TokensPublic

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])


@router.post("", status_code=201, summary="Create a token for a user (admin)")
def create_token(body: TokenCreate, session: DbSession, _: Admin) -> TokenCreated:
    """Makes the user if the name is new. The token is shown in this answer only; the server
    keeps its SHA-256."""
    created = token_ops.create_token(session, body)
    session.commit()
    return created


@router.get("", summary="List tokens (admin; never their values)")
def list_tokens(session: DbSession, _: Admin, include_jobs: bool = False) -> TokensPublic:
    data = token_ops.list_tokens(session, include_jobs=include_jobs)
    return TokensPublic(data=data, count=len(data))


@router.delete("/{token_id}", summary="Revoke a token (admin)")
def revoke_token(token_id: str, state: State, session: DbSession, _: Admin) -> TokenPublic:
    """The token stops working at once on this server (within seconds on other replicas),
    and the dashboard sessions it opened end."""
    revoked, token_sha256 = token_ops.revoke_token(session, token_id)
    session.commit()
    state.forget_token(token_sha256)
    return revoked
