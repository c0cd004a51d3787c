"""token reservations: what in-flight calls may still spend of a task's budget

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 16:25:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("reserved_tokens", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "budget_reservations",
        sa.Column("call_key", sa.String(length=200), nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_budget_reservations_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("call_key", name=op.f("pk_budget_reservations")),
    )
    op.create_index(
        op.f("ix_budget_reservations_task_id"), "budget_reservations", ["task_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_budget_reservations_task_id"), table_name="budget_reservations")
    op.drop_table("budget_reservations")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("reserved_tokens")
