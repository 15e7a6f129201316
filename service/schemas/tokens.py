"""Schemas of user tokens (``/v1/tokens``, admin only)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.fields import AwareTime, Text


class TokenCreate(BaseModel):
    """A new token for a user; the user is created (with ``role``) if the name is new."""

    model_config = ConfigDict(extra="forbid")

    user: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$",
        description="The user's name (letters, digits, '.', '_', '@', '-').",
    )
    role: Literal["admin", "user"] | None = Field(
        None, description="Role of a new user (default 'user'); must match an existing one's."
    )
    name: Text = Field("", max_length=200, description="What the token is for, e.g. 'laptop'.")


class TokenPublic(BaseModel):
    """A token as listed: never its value."""

    id: str
    kind: Literal["user", "job"]
    name: str
    user_id: str | None
    user: str | None
    role: Literal["admin", "user"] | None
    job_id: str | None
    created_at: AwareTime
    revoked_at: AwareTime | None


class TokenCreated(TokenPublic):
    """The answer to a creation: the raw token, shown this once and stored only hashed."""

    token: str


class TokensPublic(BaseModel):
    data: list[TokenPublic]
    count: int
