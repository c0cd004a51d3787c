"""Workflow and activity payloads (pydantic, through Temporal's pydantic converter)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from troupe.config import Settings
from troupe.domain import (
    Actor,
    Plan,
    PlanNode,
    Strategy,
    TaskBudgets,
    TaskError,
    TaskStatus,
)


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True)


class TaskInput(_Payload):
    """What TaskWorkflow needs to run a task; the rest stays in storage."""

    tenant_id: str
    task_id: str
    query: str
    token_budget: int
    strategy: Strategy = Strategy.SIMPLE
    require_approval: bool = False
    use_cache: bool = True  # the prompt cache may answer this task's calls
    # Auto strategy with the LLM judge on: ``strategy`` is the heuristic's pick, which
    # the judge may change (and which stands if the judge gives no usable answer).
    judge_strategy: bool = False
    session_id: str | None = None
    # Who submitted it, as the policy sees them (None: histories from before policies).
    actor: Actor | None = None
    # Every limit its calls draw on; None (histories from before budgets had scopes):
    # the task's token_budget alone.
    budgets: TaskBudgets | None = None

    @property
    def limits(self) -> TaskBudgets:
        return self.budgets or TaskBudgets(task_tokens=self.token_budget)


class ApprovalDecision(_Payload):
    """A human's answer to a task waiting for approval (the ``decide`` signal)."""

    approved: bool
    reason: str = ""


class ApprovalStep(_Payload):
    """Record that approval is awaited (``granted`` False) or was given (True)."""

    tenant_id: str
    task_id: str
    granted: bool
    reason: str = ""
    timeout_s: float = 0


class PlanResult(_Payload):
    """The validated plan, or None with the reason the task falls back to one agent."""

    plan: Plan | None
    fallback_reason: str | None = None
    # The policy wants a human's yes before this plan runs (its reason in the log).
    require_approval: bool = False


class NodeOutput(_Payload):
    """A finished node's output, as the nodes after it and the synthesis see it."""

    node_id: str
    role: str
    output: str


class Gap(_Payload):
    """A node that produced nothing, and why; synthesis must say what is missing."""

    node_id: str
    reason: str


class NodeTask(_Payload):
    task: TaskInput
    node: PlanNode
    inputs: tuple[NodeOutput, ...] = ()


class SynthesisTask(_Payload):
    task: TaskInput
    how: str
    outputs: tuple[NodeOutput, ...]
    gaps: tuple[Gap, ...] = ()


class NodesEnded(_Payload):
    """Nodes that ended without output: failed (with the error) or skipped (with why)."""

    tenant_id: str
    task_id: str
    failed: dict[str, TaskError]
    skipped: dict[str, str]


class ReactTurn(_Payload):
    """One tool call of a react agent and what it observed; the calls one step asked
    for at once share ``step`` and ``thought``."""

    thought: str
    tool: str
    arguments: dict[str, object]
    observation: str
    # Defaults: histories recorded before native tool calling (one call per step).
    call_id: str = ""  # the provider's id of the call
    step: int = 0
    ok: bool = True
    confidence: float = 0.8  # how far the observation is trusted as a fact


class ReactStepTask(_Payload):
    task: TaskInput
    turns: tuple[ReactTurn, ...] = ()
    last: bool = False  # the agent must answer now, without tools


class ReactStepResult(_Payload):
    """The step's tool calls (the agent goes on) or the answer (the task is complete)."""

    turn: ReactTurn | None = None  # histories from before a step could call several tools
    answer: str | None = None
    turns: tuple[ReactTurn, ...] = ()

    @property
    def new_turns(self) -> tuple[ReactTurn, ...]:
        return self.turns or ((self.turn,) if self.turn is not None else ())


class FinishInput(_Payload):
    tenant_id: str
    task_id: str
    status: TaskStatus
    error: TaskError | None = None


class TaskOutcome(_Payload):
    task_id: str
    status: TaskStatus
    error: TaskError | None = None


class WorkflowOptions(_Payload):
    """Limits a workflow is started with, fixed at start so replays see the same ones."""

    attempt_timeout_s: float
    heartbeat_timeout_s: float
    max_attempts: int
    max_parallel_agents: int = 5
    failure_policy: Literal["fail", "continue"] = "fail"
    approval_timeout_s: float = 3600
    react_max_steps: int = 6
    # False in every history recorded before agent steps could be local: they replay
    # as the regular activities they were.
    local_activities: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkflowOptions:
        return cls(
            attempt_timeout_s=settings.tasks.attempt_timeout_s,
            heartbeat_timeout_s=settings.tasks.heartbeat_timeout_s,
            max_attempts=settings.tasks.max_attempts,
            max_parallel_agents=settings.orchestrator.max_parallel_agents,
            failure_policy=settings.orchestrator.failure_policy,
            approval_timeout_s=settings.orchestrator.approval_timeout_s,
            react_max_steps=settings.orchestrator.react_max_steps,
            local_activities=settings.orchestrator.local_activities,
        )
