"""sessions: messages, summaries, task context; indexes for session and usage listings

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26 21:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_messages_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_messages_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    op.create_index(
        "ix_messages_tenant_id_session_id_id", "messages", ["tenant_id", "session_id", "id"]
    )
    op.create_index(op.f("ix_messages_task_id"), "messages", ["task_id"])
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("summary", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("summary_through", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.create_index("ix_sessions_tenant_id_updated_at", ["tenant_id", "updated_at"])
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("context", sa.Text(), nullable=True))
    op.create_index(
        "ix_token_usage_tenant_id_created_at", "token_usage", ["tenant_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_token_usage_tenant_id_created_at", table_name="token_usage")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("context")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_index("ix_sessions_tenant_id_updated_at")
        batch.drop_column("summary_through")
        batch.drop_column("summary")
    op.drop_index(op.f("ix_messages_task_id"), table_name="messages")
    op.drop_index("ix_messages_tenant_id_session_id_id", table_name="messages")
    op.drop_table("messages")
