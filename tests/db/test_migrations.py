"""Alembic owns the schema: up and down on SQLite and Postgres, and the models match it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from service.db.migrate import alembic_config, downgrade, include_name, upgrade
from service.db.models import Base

TABLES = {"runs", "jobs", "architectures", "epoch_summaries", "decisions", "api_tokens"}


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
