"""a tenant's tokens per UTC day: used and reserved (the limit is configuration)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 16:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_days",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("used_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reserved_tokens", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "day", name=op.f("pk_tenant_days")),
    )
    with op.batch_alter_table("budget_reservations") as batch:
        batch.add_column(sa.Column("day", sa.String(length=10), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("budget_reservations") as batch:
        batch.drop_column("day")
    op.drop_table("tenant_days")
