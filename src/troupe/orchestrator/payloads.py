"""Workflow and activity payloads (pydantic, through Temporal's pydantic converter)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from troupe.config import TaskSettings
from troupe.domain import TaskError, TaskStatus


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True)


class TaskInput(_Payload):
    """What TaskWorkflow needs to run a task; the rest stays in storage."""

    tenant_id: str
    task_id: str
    query: str
    token_budget: int


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
    """Timeouts and retries a workflow is started with, fixed at start for determinism."""

    attempt_timeout_s: float
    heartbeat_timeout_s: float
    max_attempts: int

    @classmethod
    def from_settings(cls, tasks: TaskSettings) -> WorkflowOptions:
        return cls(
            attempt_timeout_s=tasks.attempt_timeout_s,
            heartbeat_timeout_s=tasks.heartbeat_timeout_s,
            max_attempts=tasks.max_attempts,
        )
