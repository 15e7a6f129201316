"""LangGraph's own checkpointers: Postgres for the service, SQLite for the embedded default."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from langgraph.checkpoint.base import BaseCheckpointSaver

from service.settings import Settings


@contextmanager
def open_checkpointer(settings: Settings) -> Iterator[BaseCheckpointSaver[str]]:
    """Yield a ready checkpointer (tables set up) for the settings' database."""
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        from langgraph.checkpoint.sqlite import SqliteSaver

        # A file of its own: LangGraph's writes then never wait on the service's SQLite lock.
        path = settings.home / "agent-checkpoints.db"
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            path = type(settings.home)(url.removeprefix("sqlite:///") + ".agent")
        conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        saver = SqliteSaver(conn)
        saver.setup()
        try:
            yield saver
        finally:
            conn.close()
        return
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with ConnectionPool(
        conninfo,
        min_size=1,
        max_size=8,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    ) as pool:
        # The rows are dicts (row_factory above), which the pool's type cannot carry.
        pg_saver = PostgresSaver(pool)  # type: ignore[arg-type]
        pg_saver.setup()
        yield pg_saver
