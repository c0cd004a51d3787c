"""token usage rows say whether the prompt cache answered the call

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 17:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("token_usage") as batch:
        batch.add_column(
            sa.Column("cache_hit", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("token_usage") as batch:
        batch.drop_column("cache_hit")
