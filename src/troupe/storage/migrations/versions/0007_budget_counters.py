"""budget counters (task, node, session, tenant day; tokens and micro-dollars)

The task's reserved tokens and the tenant_days table become counters of one shape;
reservations name the counters that hold them and carry micro-dollars too. Tasks get
an optional money cap and a per-node token cap; tenants their own money limits.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 18:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_counters",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("limit_tokens", sa.BigInteger(), nullable=True),
        sa.Column("limit_micro_usd", sa.BigInteger(), nullable=True),
        sa.Column("used_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reserved_tokens", sa.BigInteger(), nullable=False),
        sa.Column("used_micro_usd", sa.BigInteger(), nullable=False),
        sa.Column("reserved_micro_usd", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_counters")),
    )
    op.create_index(op.f("ix_budget_counters_tenant_id"), "budget_counters", ["tenant_id"])
    # What unfinished tasks and the tenants' days have used and hold carries over.
    op.execute(
        "INSERT INTO budget_counters (id, tenant_id, limit_tokens, limit_micro_usd, "
        "used_tokens, reserved_tokens, used_micro_usd, reserved_micro_usd) "
        "SELECT 'task:' || id, tenant_id, token_budget, NULL, "
        "prompt_tokens + completion_tokens, reserved_tokens, cost_micro_usd, 0 "
        "FROM tasks WHERE status IN ('queued', 'running', 'awaiting_approval')"
    )
    op.execute(
        "INSERT INTO budget_counters (id, tenant_id, limit_tokens, limit_micro_usd, "
        "used_tokens, reserved_tokens, used_micro_usd, reserved_micro_usd) "
        "SELECT 'day:' || tenant_id || ':' || day, tenant_id, NULL, NULL, "
        "used_tokens, reserved_tokens, 0, 0 FROM tenant_days"
    )
    with op.batch_alter_table("budget_reservations") as batch:
        batch.add_column(
            sa.Column("micro_usd", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("answer_tokens", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("counters", sa.Text(), nullable=False, server_default="[]"))
    op.execute(
        "UPDATE budget_reservations SET counters = CASE WHEN day IS NULL "
        "THEN '[\"task:' || task_id || '\"]' "
        "ELSE '[\"day:' || tenant_id || ':' || day || '\", \"task:' || task_id || '\"]' END"
    )
    with op.batch_alter_table("budget_reservations") as batch:
        batch.drop_column("day")
    op.drop_table("tenant_days")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("reserved_tokens")
        batch.add_column(sa.Column("cost_budget_micro_usd", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("node_token_budget", sa.Integer(), nullable=True))
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("daily_micro_usd", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("max_task_micro_usd", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("max_task_micro_usd")
        batch.drop_column("daily_micro_usd")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("node_token_budget")
        batch.drop_column("cost_budget_micro_usd")
        batch.add_column(
            sa.Column("reserved_tokens", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "tenant_days",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("used_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reserved_tokens", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "day", name=op.f("pk_tenant_days")),
    )
    # Reservations in flight cannot be split back by counter: they are given up, and
    # only the days' used tokens return.
    op.execute("DELETE FROM budget_reservations")
    op.execute(
        "INSERT INTO tenant_days (tenant_id, day, used_tokens, reserved_tokens) "
        "SELECT tenant_id, substr(id, length(tenant_id) + 6), used_tokens, 0 "
        "FROM budget_counters WHERE id LIKE 'day:%'"
    )
    with op.batch_alter_table("budget_reservations") as batch:
        batch.drop_column("counters")
        batch.drop_column("answer_tokens")
        batch.drop_column("micro_usd")
        batch.add_column(sa.Column("day", sa.String(length=10), nullable=True))
    op.drop_index(op.f("ix_budget_counters_tenant_id"), table_name="budget_counters")
    op.drop_table("budget_counters")
