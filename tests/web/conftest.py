"""A browser-like client for the dashboard: no bearer header, cookies only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.support.factories import USER_TOKEN


@pytest.fixture
def browser(client: TestClient) -> Iterator[TestClient]:
    """A second client on the same app that carries no Authorization header."""
    with TestClient(client.app, follow_redirects=False) as c:
        yield c


@pytest.fixture
def signed_in(browser: TestClient) -> TestClient:
    response = browser.post("/ui/login", data={"token": USER_TOKEN, "next": "/ui/runs"})
    assert response.status_code == 303, response.text
    return browser
