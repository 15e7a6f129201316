"""Run Alembic migrations from code (``gradpilot serve`` and tests call this; so does
``alembic upgrade head`` from the shell). Migrations are the only way tables are made.

The Alembic scripts are package data, ``service/db/migrations``: they are found next to this
module wherever the package is installed (a checkout, site-packages, the image), and the
repository's ``alembic.ini`` names the same folder (``service.db:migrations``).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

#: The Alembic script folder, shipped inside the package.
MIGRATIONS = Path(__file__).resolve().parent / "migrations"

#: LangGraph's checkpointer owns these tables in the same database; Alembic leaves them alone.
LANGGRAPH_TABLES = frozenset(
    {"checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations", "writes"}
)


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's ``include_name`` hook: skip LangGraph's tables in autogenerate."""
    return not (type_ == "table" and name in LANGGRAPH_TABLES)


def alembic_config(url: str) -> Config:
    """Alembic's configuration for ``url``, with the packaged scripts (no ``alembic.ini``
    needed: an installed package has none)."""
    if not (MIGRATIONS / "env.py").is_file():
        raise FileNotFoundError(
            f"the Alembic scripts are missing from {MIGRATIONS}: reinstall gradpilot "
            "(they are package data of service.db)"
        )
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)
