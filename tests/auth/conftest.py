"""Two users and an admin on one in-process API."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.support.users import Users, make_user


@pytest.fixture
def users(client: TestClient) -> Users:
    return Users(
        alice=make_user(client, "alice"),
        bob=make_user(client, "bob"),
        admin=make_user(client, "root", "admin"),
    )
