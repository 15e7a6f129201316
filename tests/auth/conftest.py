"""Two users and an admin on one in-process API."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient


@dataclass(frozen=True)
class Users:
    alice: dict[str, str]
    bob: dict[str, str]
    admin: dict[str, str]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_user(client: TestClient, name: str, role: str = "user") -> dict[str, str]:
    """A user's token (made by the built-in admin), as request headers."""
    r = client.post("/v1/tokens", json={"user": name, "role": role})
    assert r.status_code == 201, r.text
    return bearer(r.json()["token"])


@pytest.fixture
def users(client: TestClient) -> Users:
    return Users(
        alice=make_user(client, "alice"),
        bob=make_user(client, "bob"),
        admin=make_user(client, "root", "admin"),
    )


@pytest.fixture
def moto_server():  # type: ignore[no-untyped-def]
    """A moto server process (S3 for the pre-signed URL tests)."""
    from bench._moto import moto_server as start_moto_server

    with start_moto_server() as url:
        yield url
