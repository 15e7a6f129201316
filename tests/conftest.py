"""Shared fixtures: settings with a private home, migrated SQLite and Postgres databases,
the API in-process with a user token."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from bench._common import scratch_database
from service.api.app import build_state
from service.app import create_app
from service.db.migrate import upgrade
from service.settings import Settings

PG_ADMIN = os.environ.get("GRADPILOT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
USER_TOKEN = "test-user-token-0123456789"


def _postgres_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    if not _postgres_available():
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI but {PG_ADMIN} is not reachable")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN}")
    return PG_ADMIN


@pytest.fixture
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """A fresh, empty database for one test (dropped afterwards)."""
    with scratch_database("gradpilot_test", admin=postgres_admin) as url:
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
