"""The HTTP API's request and response bodies (the OpenAPI schema is built from them)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from troupe.domain import (
    AgentStep,
    BeliefState,
    NodeRun,
    NodeStatus,
    Plan,
    SessionState,
    Task,
    TaskEvent,
    TaskStatus,
    Usage,
)
from troupe.storage.vectors import Memory

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class TaskCreate(BaseModel):
    """A task to run."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"query": "Summarise the trade-offs of event sourcing", "token_budget": 5000},
                {"query": "And for a team of three?", "session_id": "chat-42"},
            ]
        },
    )

    query: str = Field(min_length=1, description="What the agents should do.")
    session_id: str | None = Field(
        default=None,
        pattern=SESSION_ID_PATTERN,
        description="Conversation this task belongs to; created on first use.",
    )
    strategy: Literal["auto", "simple", "dag", "react"] = Field(
        default="auto",
        description=(
            "simple: one agent; dag: a planned team of agents; react: one agent using tools "
            "step by step; auto: Troupe chooses between simple and dag."
        ),
    )
    token_budget: int | None = Field(
        default=None, ge=1, description="Most tokens this task may use (all calls together)."
    )
    cost_budget_micro_usd: int | None = Field(
        default=None,
        ge=1,
        description="Most this task may cost, in millionths of a US dollar (all calls).",
    )
    node_token_budget: int | None = Field(
        default=None,
        ge=1,
        description="Most tokens each agent (plan node) may use; at most token_budget.",
    )
    require_approval: bool = Field(
        default=False,
        description="Wait for POST .../approve (after planning, before any agent works).",
    )
    cache: bool = Field(
        default=True,
        description=(
            "Let the prompt cache answer this task's model calls when an identical call "
            "of the same tenant was answered before (such calls cost no tokens)."
        ),
    )


class Decision(BaseModel):
    """Why a task is approved or rejected; kept in its events."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=2000)


class Rejection(Decision):
    reason: str = Field(min_length=1, max_length=2000)


class UsageView(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_micro_usd: int = Field(description="Cost in millionths of a US dollar.")

    @classmethod
    def of(cls, usage: Usage) -> UsageView:
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            cost_micro_usd=usage.cost_micro_usd,
        )


class ErrorView(BaseModel):
    code: str
    message: str


class NodeView(BaseModel):
    """One node of the task's plan: how it ran, what it produced, what it cost."""

    node_id: str
    role: str
    tier: str
    depends_on: list[str]
    status: NodeStatus
    output: str | None
    error: ErrorView | None
    usage: UsageView
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, node: NodeRun) -> NodeView:
        return cls(
            node_id=node.node_id,
            role=node.role,
            tier=node.tier,
            depends_on=list(node.depends_on),
            status=node.status,
            output=node.output,
            error=ErrorView(code=node.error.code, message=node.error.message)
            if node.error
            else None,
            usage=UsageView.of(node.usage),
            attempts=node.attempts,
            started_at=node.started_at,
            finished_at=node.finished_at,
        )


class TaskLinks(BaseModel):
    self: str
    events: str
    cancel: str
    approve: str
    reject: str


class TaskView(BaseModel):
    """A task and everything known about it so far."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "tsk_5f0c3a9e1b2d4c6e8f9a0b1c",
                    "status": "completed",
                    "query": "Summarise the trade-offs of event sourcing",
                    "session_id": None,
                    "strategy": "simple",
                    "token_budget": 5000,
                    "result": "Event sourcing keeps every change ...",
                    "error": None,
                    "usage": {
                        "prompt_tokens": 61,
                        "completion_tokens": 40,
                        "total_tokens": 101,
                        "cost_micro_usd": 34,
                    },
                    "created_at": "2026-11-26T12:00:00Z",
                    "started_at": "2026-11-26T12:00:00.010Z",
                    "finished_at": "2026-11-26T12:00:00.030Z",
                    "links": {
                        "self": "/api/v1/tasks/tsk_5f0c3a9e1b2d4c6e8f9a0b1c",
                        "events": "/api/v1/tasks/tsk_5f0c3a9e1b2d4c6e8f9a0b1c/events",
                        "cancel": "/api/v1/tasks/tsk_5f0c3a9e1b2d4c6e8f9a0b1c/cancel",
                        "approve": "/api/v1/tasks/tsk_5f0c3a9e1b2d4c6e8f9a0b1c/approve",
                        "reject": "/api/v1/tasks/tsk_5f0c3a9e1b2d4c6e8f9a0b1c/reject",
                    },
                }
            ]
        }
    )

    id: str
    status: TaskStatus
    query: str
    session_id: str | None
    strategy: str
    token_budget: int
    cost_budget_micro_usd: int | None = None
    node_token_budget: int | None = None
    result: str | None
    error: ErrorView | None
    usage: UsageView
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: TaskLinks
    plan: Plan | None = Field(default=None, description="The plan (dag strategy).")
    nodes: list[NodeView] = Field(
        default_factory=list, description="How each plan node ran (single-task reads only)."
    )
    steps: list[AgentStep] = Field(
        default_factory=list,
        description="Steps of the task's tool-using agents: tool calls, tool time, sandbox "
        "fuel, tokens, cost, BeliefState after each (single-task reads only).",
    )
    beliefs: BeliefState | None = Field(
        default=None,
        description="The react agent's BeliefState after its last step: the facts its "
        "answer rests on (single-task reads only).",
    )
    context: str | None = Field(
        default=None,
        description="What its agents were told before its question: the session's "
        "conversation so far and recalled memories (session tasks, once prepared).",
    )
    trace_id: str | None = Field(
        default=None, description="The OpenTelemetry trace of its run, when tracing is on."
    )

    @classmethod
    def of(
        cls, task: Task, nodes: Sequence[NodeRun] = (), steps: Sequence[AgentStep] = ()
    ) -> TaskView:
        base = f"/api/v1/tasks/{task.id}"
        return cls(
            id=task.id,
            status=task.status,
            query=task.query,
            session_id=task.session_id,
            strategy=task.strategy.value,
            token_budget=task.token_budget,
            cost_budget_micro_usd=task.cost_budget_micro_usd,
            node_token_budget=task.node_token_budget,
            result=task.result,
            error=ErrorView(code=task.error.code, message=task.error.message)
            if task.error
            else None,
            usage=UsageView.of(task.usage),
            created_at=task.created_at,
            started_at=task.started_at,
            finished_at=task.finished_at,
            links=TaskLinks(
                self=base,
                events=f"{base}/events",
                cancel=f"{base}/cancel",
                approve=f"{base}/approve",
                reject=f"{base}/reject",
            ),
            plan=task.plan,
            nodes=[NodeView.of(n) for n in nodes],
            steps=list(steps),
            beliefs=next((s.beliefs for s in reversed(steps) if s.node_id is None), None),
            context=task.context,
            trace_id=task.trace_id,
        )


class TaskPageView(BaseModel):
    items: list[TaskView]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page.")


class EventView(BaseModel):
    """The `data` of one SSE message; its SSE `id` is `seq` and its `event` is `type`."""

    task_id: str
    seq: int
    type: str
    data: dict[str, object]
    created_at: datetime

    @classmethod
    def of(cls, event: TaskEvent) -> EventView:
        return cls(
            task_id=event.task_id,
            seq=event.seq,
            type=event.type.value,
            data=event.data,
            created_at=event.created_at,
        )


class HealthView(BaseModel):
    status: Literal["ok", "ready"]
    checks: dict[str, str] = Field(default_factory=dict)


class ProviderView(BaseModel):
    name: str
    kind: str = Field(description="simulation, openai, anthropic or openai_compatible")
    breaker: str = Field(description="closed, open or half_open, as this process sees it")
    recent_failures: int = Field(description="Failures counted in the breaker's window")
    healthy: bool = Field(description="The breaker lets calls through (closed)")


class TierCandidateView(BaseModel):
    provider: str
    model: str
    priority: int
    weight: int


class ProvidersView(BaseModel):
    """The configured providers with their health, and each tier's candidates."""

    providers: list[ProviderView]
    tiers: dict[str, list[TierCandidateView]]
    fallback_to_lower_tier: bool


class UsageLineView(BaseModel):
    calls: int = Field(description="Metered calls (prompt cache hits included)")
    cache_hits: int = Field(description="Calls the prompt cache answered at no cost")
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_micro_usd: int = Field(description="Cost in millionths of a US dollar.")


class DayUsageView(UsageLineView):
    day: str = Field(description="UTC day, YYYY-MM-DD")


class ModelUsageView(UsageLineView):
    provider: str
    model: str


class SessionUsageView(UsageLineView):
    session_id: str | None = Field(description="null: tasks outside any session")


class UsageReportView(BaseModel):
    """The tenant's metered model calls over a range of UTC days, as providers reported
    them: in all, per day, per provider and model, per session."""

    since: date
    until: date
    total: UsageLineView
    by_day: list[DayUsageView]
    by_model: list[ModelUsageView]
    by_session: list[SessionUsageView]


class DayBudgetView(BaseModel):
    day: date = Field(description="Today, UTC")
    limit_tokens: int | None = Field(description="null: no daily token limit")
    used_tokens: int
    reserved_tokens: int = Field(description="Held by calls in flight")
    remaining_tokens: int | None = Field(description="null: no daily token limit")
    limit_micro_usd: int | None = Field(default=None, description="null: no daily money limit")
    used_micro_usd: int = 0
    reserved_micro_usd: int = Field(default=0, description="Held by calls in flight")
    remaining_micro_usd: int | None = Field(default=None, description="null: no daily money limit")
    resets_at: datetime = Field(description="Next midnight, UTC")
    alert_threshold: float = Field(description="Share of a limit that raises budget.alert")
    alerting: bool = Field(description="Tokens or money used are at or over the threshold")


class TaskBudgetView(BaseModel):
    default_token_budget: int = Field(description="A task's budget when its request names none")
    max_token_budget: int = Field(description="The largest budget a request may ask for")
    default_cost_budget_micro_usd: int | None = Field(
        default=None, description="A task's money cap when its request names none; null: none"
    )
    max_cost_budget_micro_usd: int | None = Field(
        default=None, description="The largest money cap a request may ask for; null: any"
    )
    default_node_token_budget: int | None = Field(
        default=None, description="Each plan node's token cap unless the request names one"
    )


class SessionBudgetView(BaseModel):
    tokens: int | None = Field(description="Tokens all tasks of one session may use; null: any")
    micro_usd: int | None = Field(description="Money all tasks of one session may cost")


class BudgetsView(BaseModel):
    """The tenant's budgets: per UTC day, per task (and plan node), per session."""

    tenant_daily: DayBudgetView
    task: TaskBudgetView
    session: SessionBudgetView | None = None


class DecisionView(BaseModel):
    """One policy decision, as the audit log keeps it."""

    id: int
    action: str
    allowed: bool
    require_approval: bool
    reason: str
    input_digest: str = Field(description="SHA-256 of the canonical JSON input")
    policy_version: str = Field(description="Digest of the policy files in force")
    user_id: str | None
    task_id: str | None
    created_at: datetime


class DecisionPageView(BaseModel):
    items: list[DecisionView]
    next_cursor: str | None = Field(description="Pass back as `cursor` for older ones")


class TurnView(BaseModel):
    task_id: str
    question: str
    answer: str
    answered_at: datetime


class SessionView(BaseModel):
    """A session (a conversation): its summary of older turns and the turns after it."""

    id: str
    user_id: str | None = Field(description="Who began it; null: shared within the tenant")
    created_at: datetime
    updated_at: datetime
    tasks: int = Field(description="Tasks submitted in it")
    summary: str | None = Field(description="The small tier's summary of older turns")
    turns: list[TurnView] = Field(
        default_factory=list,
        description="Finished turns after the summary, oldest first (single reads only)",
    )
    links: dict[str, str]

    @classmethod
    def of(cls, state: SessionState) -> SessionView:
        return cls(
            id=state.id,
            user_id=state.user_id,
            created_at=state.created_at,
            updated_at=state.updated_at,
            tasks=state.tasks,
            summary=state.summary,
            turns=[
                TurnView(
                    task_id=t.task_id,
                    question=t.question,
                    answer=t.answer,
                    answered_at=t.answered_at,
                )
                for t in state.turns
            ],
            links={
                "self": f"/api/v1/sessions/{state.id}",
                "tasks": f"/api/v1/tasks?session_id={state.id}",
            },
        )


class SessionPageView(BaseModel):
    items: list[SessionView]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page.")


class DocumentCreate(BaseModel):
    """A text to remember for the tenant: agents find it with memory_search and in
    their context."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=20_000)
    title: str | None = Field(default=None, max_length=200)


class MemoryView(BaseModel):
    id: str
    concern: Literal["session", "tasks", "documents"]
    text: str
    title: str | None
    session_id: str | None
    task_id: str | None
    created_at: datetime
    score: float | None = Field(default=None, description="Similarity to the query (searches)")

    @classmethod
    def of(cls, memory: Memory, score: float | None = None) -> MemoryView:
        return cls(
            id=memory.id,
            concern=memory.concern.value,
            text=memory.text,
            title=memory.title,
            session_id=memory.session_id,
            task_id=memory.task_id,
            created_at=memory.created_at,
            score=score,
        )


class MemorySearchView(BaseModel):
    items: list[MemoryView]
