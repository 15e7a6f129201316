"""Shared fixtures: settings with a private home, migrated SQLite and Postgres databases, the
API in-process with a user token, and a moto server process.

Every test that needs PostgreSQL (through ``postgres_admin``, ``postgres_url`` or
``pg_client``) carries the ``postgres`` marker, set here at collection, so that
``-m "not postgres"`` leaves them out. A missing server skips them, except under ``CI=true``
where it fails them.

Helpers to import (factories, fakes, servers) are in ``tests/support``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import build_state
from service.app import create_app
from service.db.migrate import upgrade
from service.settings import Settings
from tests.support import moto, postgres
from tests.support.factories import USER_TOKEN

#: The fixtures that reach the PostgreSQL server; a test using any of them is ``postgres``.
POSTGRES_FIXTURES = frozenset({"postgres_admin", "postgres_url", "pg_client"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    why_not = postgres.unavailable_reason(postgres.TEST_ADMIN)
    if why_not:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why_not}; PostgreSQL is required under CI")
        pytest.skip(why_not)
    return postgres.TEST_ADMIN


@pytest.fixture
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """A fresh, empty database for one test (dropped afterwards)."""
    with postgres.scratch_database("gradpilot_test", admin=postgres_admin) as url:
        yield url


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "gradpilot-home"


@pytest.fixture
def settings(home: Path) -> Settings:
    return Settings(home=home, api_tokens=[USER_TOKEN])


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    return settings


@pytest.fixture
def client(migrated: Settings) -> Iterator[TestClient]:
    app = create_app(migrated, state=build_state(migrated))
    with TestClient(app, headers={"Authorization": f"Bearer {USER_TOKEN}"}) as c:
        yield c


@pytest.fixture
def pg_client(postgres_url: str, home: Path) -> Iterator[TestClient]:
    s = Settings(home=home, api_tokens=[USER_TOKEN], database_url=postgres_url)
    s.ensure_home()
    upgrade(postgres_url)
    state = build_state(s)
    with TestClient(
        create_app(s, state=state), headers={"Authorization": f"Bearer {USER_TOKEN}"}
    ) as c:
        yield c
    state.engine.dispose()


@pytest.fixture
def moto_server() -> Iterator[str]:
    """A moto server process with Batch configured to run without Docker; yields its URL."""
    with moto.moto_server() as url:
        yield url
