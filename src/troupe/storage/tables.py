"""SQLAlchemy table models. Every row of tenant data carries ``tenant_id``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
AutoId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite drops tz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class TenantRow(Base):
    """A customer: its data is walled off from every other tenant's. The nullable
    limits override configuration (``limits``, ``budgets``) for this tenant."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    # A key of the policy data's plans: what the tenant may use (docs/policies.md).
    plan: Mapped[str] = mapped_column(String(32), server_default="standard")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    daily_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    daily_micro_usd: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_task_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_task_micro_usd: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    requests_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    burst: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_concurrent_tasks: Mapped[int | None] = mapped_column(Integer, nullable=True)


class UserRow(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ApiKeyRow(Base):
    """An API key: only its public prefix (the lookup) and a SHA-256 of the whole key
    are stored; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.id"), index=True)
    user_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("users.id"), nullable=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    requests_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    burst: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_concurrent_tasks: Mapped[int | None] = mapped_column(Integer, nullable=True)


class SessionRow(Base):
    """A conversation: its tasks see the turns before them (``messages``), the older
    ones folded into ``summary``."""

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_tenant_id_updated_at", "tenant_id", "updated_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    # The user who began it (None: a key without a user; shared within the tenant).
    user_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # The small tier's summary of the turns up to message ``summary_through`` (an id).
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary_through: Mapped[int] = mapped_column(BigInteger, server_default="0")


class MessageRow(Base):
    """One message of a session: a task's question (user) or its answer (assistant)."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_tenant_id_session_id_id", "tenant_id", "session_id", "id"),
    )

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("sessions.id", ondelete="CASCADE")
    )
    task_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("tasks.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class TaskRow(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_tenant_status_seq", "tenant_id", "status", "seq"),
        Index("ix_tasks_tenant_session_seq", "tenant_id", "session_id", "seq"),
        Index("ix_tasks_tenant_key_status", "tenant_id", "api_key_id", "status"),
    )

    # seq orders tasks for keyset pagination; id is the public identifier.
    seq: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("sessions.id", ondelete="SET NULL"), nullable=True
    )
    query: Mapped[str] = mapped_column(Text)
    strategy: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(24))
    token_budget: Mapped[int] = mapped_column(Integer)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_micro_usd: Mapped[int] = mapped_column(BigInteger, default=0)
    workflow_id: Mapped[str] = mapped_column(String(80))
    # Optional money cap of the task, and the token cap of each of its plan nodes.
    cost_budget_micro_usd: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    node_token_budget: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Last event sequence number handed out; bumping it row-locks the task, so a
    # task's events are numbered gap-free and committed in order.
    event_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # Who submitted it: the user (a key's user or a JWT's subject) and the API key.
    user_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    api_key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # The validated plan (dag strategy), as the planner wrote it.
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # What its agents were told of its session and memory, fixed at its first step.
    context: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The OpenTelemetry trace of its run (32 hex digits), when tracing is on.
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True)


class TaskNodeRow(Base):
    """One node of a task's plan and how it ran."""

    __tablename__ = "task_nodes"
    __table_args__ = (UniqueConstraint("task_id", "node_id"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(40), ForeignKey("tasks.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(String(64))
    node_id: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(16))
    depends_on: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_micro_usd: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("task_id", "seq"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(40), ForeignKey("tasks.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(48))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class BudgetCounterRow(Base):
    """One budget's counter: a task's, a plan node's, a session's or a tenant's UTC day
    (``id`` is ``task:…``, ``node:…``, ``session:…`` or ``day:<tenant>:<YYYY-MM-DD>``),
    with the limits it was last reserved under (None: no limit)."""

    __tablename__ = "budget_counters"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    limit_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    limit_micro_usd: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    used_tokens: Mapped[int] = mapped_column(BigInteger)
    reserved_tokens: Mapped[int] = mapped_column(BigInteger)
    used_micro_usd: Mapped[int] = mapped_column(BigInteger)
    reserved_micro_usd: Mapped[int] = mapped_column(BigInteger)


class BudgetReservationRow(Base):
    """What one call may still spend, held on each of its budgets' counters from before
    the call until its usage is recorded (settled) or it is given up (released), each
    exactly once: whoever deletes the row does it."""

    __tablename__ = "budget_reservations"

    call_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    task_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("tasks.id", ondelete="CASCADE"), index=True
    )
    tenant_id: Mapped[str] = mapped_column(String(64))
    tokens: Mapped[int] = mapped_column(Integer)
    micro_usd: Mapped[int] = mapped_column(BigInteger, server_default="0")
    answer_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    # The ids of the counters that hold it, as a JSON list.
    counters: Mapped[str] = mapped_column(Text, server_default="[]")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class PolicyDecisionRow(Base):
    """One policy decision, for audit: what was asked (a digest of the input), what the
    policy in force (its version) answered, for whom."""

    __tablename__ = "policy_decisions"
    __table_args__ = (Index("ix_policy_decisions_tenant_id_id", "tenant_id", "id"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    allowed: Mapped[bool] = mapped_column(Boolean)
    require_approval: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    input_digest: Mapped[str] = mapped_column(String(64))
    policy_version: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    task_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class TokenUsageRow(Base):
    __tablename__ = "token_usage"
    __table_args__ = (Index("ix_token_usage_tenant_id_created_at", "tenant_id", "created_at"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    # One row per provider call attempt; the key makes a re-delivered write a no-op.
    call_key: Mapped[str] = mapped_column(String(200), unique=True)
    task_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("tasks.id", ondelete="CASCADE"), index=True
    )
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    # The plan node the call served; None for task-level calls (planner, synthesis).
    node_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    provider: Mapped[str] = mapped_column(String(48))
    model: Mapped[str] = mapped_column(String(120))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    # Answered by the prompt cache: no provider call, zero tokens, zero cost.
    cache_hit: Mapped[bool] = mapped_column(Boolean, server_default=false())
    cost_micro_usd: Mapped[int] = mapped_column(BigInteger)
    latency_ms: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AgentStepRow(Base):
    """One step of a tool-using agent: its tool calls, what they cost, and the agent's
    BeliefState after it. ``node_id`` is "" for the task's own (react) agent."""

    __tablename__ = "agent_steps"
    __table_args__ = (UniqueConstraint("task_id", "node_id", "step"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(40), ForeignKey("tasks.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(String(64))
    node_id: Mapped[str] = mapped_column(String(32))
    step: Mapped[int] = mapped_column(Integer)
    thought: Mapped[str] = mapped_column(Text)
    tool_calls: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    beliefs: Mapped[dict[str, Any]] = mapped_column(JSON)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cost_micro_usd: Mapped[int] = mapped_column(BigInteger)
    tool_seconds: Mapped[float] = mapped_column(Float)
    fuel: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


# The tables themselves, for Core statements (the store's hot path skips the ORM).
tenants = cast(Table, TenantRow.__table__)
users = cast(Table, UserRow.__table__)
api_keys = cast(Table, ApiKeyRow.__table__)
sessions = cast(Table, SessionRow.__table__)
messages = cast(Table, MessageRow.__table__)
tasks = cast(Table, TaskRow.__table__)
task_nodes = cast(Table, TaskNodeRow.__table__)
events = cast(Table, EventRow.__table__)
token_usage = cast(Table, TokenUsageRow.__table__)
budget_reservations = cast(Table, BudgetReservationRow.__table__)
budget_counters = cast(Table, BudgetCounterRow.__table__)
policy_decisions = cast(Table, PolicyDecisionRow.__table__)
agent_steps = cast(Table, AgentStepRow.__table__)
