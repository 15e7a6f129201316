"""Alembic owns the schema: up and down on SQLite and Postgres, and the models match it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from service.db.migrate import alembic_config, downgrade, include_name, upgrade
from service.db.models import Base

TABLES = {
    "runs",
    "jobs",
    "architectures",
    "epoch_summaries",
    "decisions",
    "api_tokens",
    "users",
    "dashboard_sessions",
}


def _roundtrip(url: str) -> None:
    upgrade(url)
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
        downgrade(url)
        assert not TABLES & set(inspect(engine).get_table_names())
        upgrade(url)
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_sqlite_up_and_down(tmp_path: Path) -> None:
    _roundtrip(f"sqlite:///{tmp_path / 'db.sqlite'}")


def test_postgres_up_and_down(postgres_url: str) -> None:
    _roundtrip(postgres_url)


def test_langgraph_tables_are_left_alone(postgres_url: str) -> None:
    """Autogenerate must not propose dropping LangGraph's checkpoint tables."""
    from langgraph.checkpoint.postgres import PostgresSaver

    upgrade(postgres_url)
    with PostgresSaver.from_conn_string(postgres_url.replace("+psycopg", "")) as saver:
        saver.setup()
    cfg = alembic_config(postgres_url)
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"include_name": include_name})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == []
        command.check(cfg)  # raises if autogenerate would change anything
    finally:
        engine.dispose()


def test_existing_runs_and_tokens_become_the_builtin_admins(tmp_path: Path) -> None:
    """A database made before users existed keeps working: its runs and user tokens belong to
    the built-in admin after the upgrade."""
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    upgrade(url, "0001")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO runs (id, status, dataset, hyperparameters, budget, resources, "
                    "advisor, approval, seed, cancel_requested, input_tokens, output_tokens, "
                    "created_at, updated_at) VALUES ('r1', 'pending', '{}', '{}', '{}', '{}', "
                    "'rules', 'auto', 0, 0, 0, 0, '2026-01-01', '2026-01-01')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO api_tokens (id, token_sha256, kind, name, created_at) "
                    "VALUES ('t1', 'abc', 'user', 'old', '2026-01-01')"
                )
            )
        upgrade(url, "0003")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT owner_id FROM runs")).scalar_one() == "admin"
            assert conn.execute(text("SELECT user_id FROM api_tokens")).scalar_one() == "admin"
            assert conn.execute(text("SELECT role FROM users WHERE id = 'admin'")).scalar_one() == (
                "admin"
            )
    finally:
        engine.dispose()
