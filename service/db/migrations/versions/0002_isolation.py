"""jobs.isolation: the isolation level each job's trainer ran with

Revision ID: 0002_isolation
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_isolation"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column(
            "isolation",
            sa.String(length=300),
            nullable=True,
            comment="The isolation level the trainer reported it ran with.",
        ),
    )


def downgrade() -> None:
    op.drop_column("jobs", "isolation")
