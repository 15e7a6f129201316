"""Users of the API in tests: bearer headers, and users made through ``POST /v1/tokens``."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.testclient import TestClient


@dataclass(frozen=True)
class Users:
    """Request headers of two users and an admin on one app."""

    alice: dict[str, str]
    bob: dict[str, str]
    admin: dict[str, str]


def bearer(token: str) -> dict[str, str]:
    """The request headers that carry ``token``."""
    return {"Authorization": f"Bearer {token}"}


def make_user(client: TestClient, name: str, role: str = "user") -> dict[str, str]:
    """A user's token (made by the built-in admin), as request headers."""
    r = client.post("/v1/tokens", json={"user": name, "role": role})
    assert r.status_code == 201, r.text
    return bearer(r.json()["token"])
