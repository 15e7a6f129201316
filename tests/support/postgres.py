"""Scratch PostgreSQL databases for tests and benchmarks, and whether the server answers.

Tests and benchmarks each have their own admin URL (``GRADPILOT_TEST_PG``,
``GRADPILOT_BENCH_PG``), both a libpq URL of a database the server already has; the default is
the local server with trust auth that ``scripts/ensure-postgres.sh`` starts.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

DEFAULT_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
#: The server that tests make their databases on.
TEST_ADMIN = os.environ.get("GRADPILOT_TEST_PG", DEFAULT_ADMIN)
#: The server that benchmarks make their databases on.
BENCH_ADMIN = os.environ.get("GRADPILOT_BENCH_PG", DEFAULT_ADMIN)


def unavailable_reason(admin: str = TEST_ADMIN) -> str | None:
    """None when the server at ``admin`` answers, else why not (one line)."""
    try:
        import psycopg

        with psycopg.connect(admin, connect_timeout=3):
            return None
    except Exception as e:  # noqa: BLE001 - any failure means "not available"
        return f"PostgreSQL is not reachable at {admin} ({type(e).__name__}: {e})"


@contextlib.contextmanager
def scratch_database(prefix: str, admin: str = TEST_ADMIN) -> Iterator[str]:
    """A fresh database ``<prefix>_<random>``; yields its SQLAlchemy URL, drops it afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def libpq_url(sqlalchemy_url: str) -> str:
    """``postgresql+psycopg://…`` → ``postgresql://…`` (psycopg's own connection string)."""
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)
