"""Models shared by every layer: tasks, their events, and what they cost."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TaskStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"
    REJECTED = "rejected"

    @property
    def terminal(self) -> bool:
        return self not in (TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.AWAITING_APPROVAL)


class Strategy(enum.StrEnum):
    """How a task is executed: one agent, a planned DAG of agents, or one agent that
    reasons and uses tools step by step (react)."""

    SIMPLE = "simple"
    DAG = "dag"
    REACT = "react"


class NodeStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"  # the task ended (cancelled, failed, rejected) before it did


class EventType(enum.StrEnum):
    SUBMITTED = "task.submitted"
    STARTED = "task.started"
    CANCEL_REQUESTED = "task.cancel_requested"
    LLM_CALL = "llm.call"
    LLM_FALLBACK = "llm.fallback"
    BUDGET_ALERT = "budget.alert"
    POLICY_DENIED = "policy.denied"
    STRATEGY_CHOSEN = "strategy.chosen"
    PLAN_CREATED = "plan.created"
    PLAN_FALLBACK = "plan.fallback"
    NODE_STARTED = "node.started"
    NODE_COMPLETED = "node.completed"
    NODE_FAILED = "node.failed"
    NODE_SKIPPED = "node.skipped"
    REACT_STEP = "react.step"
    CONTEXT_PREPARED = "context.prepared"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_GRANTED = "approval.granted"
    COMPLETED = "task.completed"
    FAILED = "task.failed"
    CANCELLED = "task.cancelled"
    BUDGET_EXCEEDED = "task.budget_exceeded"
    REJECTED = "task.rejected"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_EVENTS


TERMINAL_EVENTS = frozenset(
    {
        EventType.COMPLETED,
        EventType.FAILED,
        EventType.CANCELLED,
        EventType.BUDGET_EXCEEDED,
        EventType.REJECTED,
    }
)

TERMINAL_EVENT_FOR_STATUS = {
    TaskStatus.COMPLETED: EventType.COMPLETED,
    TaskStatus.FAILED: EventType.FAILED,
    TaskStatus.CANCELLED: EventType.CANCELLED,
    TaskStatus.BUDGET_EXCEEDED: EventType.BUDGET_EXCEEDED,
    TaskStatus.REJECTED: EventType.REJECTED,
}


class Usage(BaseModel):
    """Tokens and money a task or call consumed, as the provider reported it."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micro_usd: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_micro_usd=self.cost_micro_usd + other.cost_micro_usd,
        )


class TaskError(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    message: str


ModelTier = Literal["small", "medium", "large"]
NODE_ID_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"


class PlanNode(BaseModel):
    """One sub-task of a plan: an agent with a role, instructions and its inputs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=NODE_ID_PATTERN, description="Unique within the plan.")
    role: str = Field(min_length=1, max_length=200, description="Who the agent is.")
    instructions: str = Field(min_length=1, max_length=4000, description="What it must do.")
    tier: ModelTier = Field(default="medium", description="Model tier the agent uses.")
    tools: tuple[str, ...] = Field(default=(), description="Tools the agent may call.")
    depends_on: tuple[str, ...] = Field(
        default=(), description="Ids of nodes whose outputs this node needs."
    )


class Plan(BaseModel):
    """A task as a DAG of agents, fanned in by a synthesis step."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nodes: tuple[PlanNode, ...] = Field(min_length=1)
    synthesis: str = Field(
        min_length=1, max_length=4000, description="How to combine the nodes' outputs."
    )


class Task(BaseModel):
    """One submitted task as storage knows it."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant_id: str
    session_id: str | None
    query: str
    strategy: Strategy
    status: TaskStatus
    token_budget: int
    result: str | None
    error: TaskError | None
    usage: Usage
    workflow_id: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    plan: Plan | None = None
    cost_budget_micro_usd: int | None = None
    node_token_budget: int | None = None
    # What its agents were told of its session and memory (None: not prepared yet).
    context: str | None = None
    trace_id: str | None = None  # its OpenTelemetry trace, when tracing is on


class SessionTurn(BaseModel):
    """One finished exchange of a session: a task's question and its answer."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    question: str
    answer: str
    # The answer's message id: turns are ordered, and summaries cut, by it.
    answer_id: int
    answered_at: datetime


class SessionState(BaseModel):
    """A session as its next task sees it: the summary of older turns and the turns
    after it (oldest first); the hot copy lives in the session cache."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant_id: str
    user_id: str | None
    created_at: datetime
    updated_at: datetime
    summary: str | None
    summary_through: int
    turns: tuple[SessionTurn, ...]
    tasks: int


class Actor(BaseModel):
    """Who acts, as the policy sees them: the tenant (its plan) and the user and role of
    the credential. A task carries its submitter's, so the agents' tool calls and model
    choices are judged for them."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    plan: str = "standard"
    user_id: str | None = None
    role: Literal["admin", "member"] = "member"
    tenant_status: str = "active"

    def facts(self) -> dict[str, Any]:
        return {
            "tenant": {"id": self.tenant_id, "status": self.tenant_status, "plan": self.plan},
            "subject": {"user": self.user_id, "role": self.role},
        }


class TaskBudgets(BaseModel):
    """Every limit a task's model calls draw on, resolved when it is submitted (request,
    then the tenant's own limits, then configuration). None: no such limit. Each call
    reserves against its task, its plan node, its session and its tenant's UTC day at
    once."""

    model_config = ConfigDict(frozen=True)

    task_tokens: int
    task_micro_usd: int | None = None
    node_tokens: int | None = None
    session_tokens: int | None = None
    session_micro_usd: int | None = None
    day_tokens: int | None = None
    day_micro_usd: int | None = None


class NodeRun(BaseModel):
    """How one plan node ran (or did not)."""

    model_config = ConfigDict(frozen=True)

    node_id: str
    role: str
    tier: str
    depends_on: tuple[str, ...]
    status: NodeStatus
    output: str | None
    error: TaskError | None
    usage: Usage
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None


class TaskEvent(BaseModel):
    """One entry of a task's event stream; ``seq`` is gap-free per task from 1."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    seq: int
    type: EventType
    data: dict[str, Any]
    created_at: datetime


class Fact(BaseModel):
    """Something an agent established, where from, and how far to trust it (0..1)."""

    model_config = ConfigDict(frozen=True)

    content: str
    source: str = Field(description="The step and tool (or the agent's reasoning).")
    step: int
    confidence: float = Field(ge=0, le=1)


class BeliefState(BaseModel):
    """An agent's working state across its steps: what it knows, what is still open,
    and its plan. Shown in the task's detail; the answer cites the facts it rests on."""

    model_config = ConfigDict(frozen=True)

    facts: tuple[Fact, ...] = ()
    open_questions: tuple[str, ...] = ()
    plan: tuple[str, ...] = ()


class ToolCallRun(BaseModel):
    """One tool call of an agent step, and what it cost."""

    model_config = ConfigDict(frozen=True)

    tool: str
    arguments: dict[str, Any]
    ok: bool
    observation: str
    seconds: float = 0.0
    fuel: int | None = None  # sandbox CPU, when the tool ran code there


class AgentStep(BaseModel):
    """One step of a tool-using agent (a react task, or a plan node with tools)."""

    model_config = ConfigDict(frozen=True)

    node_id: str | None
    step: int
    thought: str
    calls: tuple[ToolCallRun, ...]
    answer: str | None
    beliefs: BeliefState
    usage: Usage
    tool_seconds: float
    fuel: int
    created_at: datetime | None = None
