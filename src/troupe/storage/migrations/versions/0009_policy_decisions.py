"""policy decisions (audit log), tenants' plans, sessions' owners

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 18:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_decisions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("require_approval", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("input_digest", sa.String(length=64), nullable=False),
        sa.Column("policy_version", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=True),
        sa.Column("task_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_decisions")),
    )
    op.create_index("ix_policy_decisions_tenant_id_id", "policy_decisions", ["tenant_id", "id"])
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(
            sa.Column("plan", sa.String(length=32), nullable=False, server_default="standard")
        )
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("user_id", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("user_id")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("plan")
    op.drop_index("ix_policy_decisions_tenant_id_id", table_name="policy_decisions")
    op.drop_table("policy_decisions")
