"""users, token owners and revocation, run owners, dashboard sessions

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-03 10:00:00.000000

Every token and run that existed before users did belongs to the built-in administrator
(id ``admin``), so that a single-user setup keeps working unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002_isolation'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADMIN = 'admin'


def upgrade() -> None:
    users = op.create_table('users',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False, comment='admin or user'),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.bulk_insert(users, [
        {'id': ADMIN, 'name': ADMIN, 'role': 'admin', 'created_at': datetime.now(UTC)}
    ])
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('user_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_api_tokens_user_id'), ['user_id'], unique=False)
        batch_op.create_foreign_key(
            'fk_api_tokens_user_id_users', 'users', ['user_id'], ['id'], ondelete='CASCADE'
        )
    op.execute(f"UPDATE api_tokens SET user_id = '{ADMIN}' WHERE kind = 'user'")
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column(
            'owner_id', sa.String(length=32), server_default=ADMIN, nullable=False,
            comment='The user who created the run.',
        ))
        batch_op.create_index(batch_op.f('ix_runs_owner_id'), ['owner_id'], unique=False)
        batch_op.create_foreign_key('fk_runs_owner_id_users', 'users', ['owner_id'], ['id'])
    op.create_table('dashboard_sessions',
    sa.Column('id_sha256', sa.String(length=64), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id_sha256')
    )
    with op.batch_alter_table('dashboard_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dashboard_sessions_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_dashboard_sessions_token_sha256'), ['token_sha256'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('dashboard_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dashboard_sessions_token_sha256'))
        batch_op.drop_index(batch_op.f('ix_dashboard_sessions_expires_at'))
    op.drop_table('dashboard_sessions')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_runs_owner_id_users', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_runs_owner_id'))
        batch_op.drop_column('owner_id')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_constraint('fk_api_tokens_user_id_users', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_api_tokens_user_id'))
        batch_op.drop_column('revoked_at')
        batch_op.drop_column('user_id')
    op.drop_table('users')
