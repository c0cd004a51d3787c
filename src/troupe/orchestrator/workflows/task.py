"""TaskWorkflow: one task from queued to a terminal status, durably.

The happy path is a single activity (the agent records its own start, usage and
result), which keeps history short and the hand-offs few. Every other ending is
recorded by ``finish_task`` so storage always learns how the task ended.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from troupe.domain import TaskError, TaskStatus
    from troupe.orchestrator.payloads import FinishInput, TaskInput, TaskOutcome, WorkflowOptions

# Error types (TroupeError class names) that end the task with a status of their own.
_STATUS_FOR_ERROR_TYPE = {"BudgetExceeded": TaskStatus.BUDGET_EXCEEDED}


@workflow.defn(name="TaskWorkflow")
class TaskWorkflow:
    @workflow.run
    async def run(self, task: TaskInput, options: WorkflowOptions) -> TaskOutcome:
        try:
            await workflow.execute_activity(
                "run_simple_agent",
                task,
                start_to_close_timeout=timedelta(seconds=options.attempt_timeout_s),
                heartbeat_timeout=timedelta(seconds=options.heartbeat_timeout_s),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(milliseconds=200),
                    maximum_attempts=options.max_attempts,
                ),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                result_type=str,
            )
        except asyncio.CancelledError:
            await self._finish(task, TaskStatus.CANCELLED, None, options)
            raise
        except ActivityError as exc:
            if is_cancelled_exception(exc):  # the activity acknowledged our cancel
                await self._finish(task, TaskStatus.CANCELLED, None, options)
                raise  # the workflow itself ends cancelled
            status, error = _ending_for(exc)
            await self._finish(task, status, error, options)
            return TaskOutcome(task_id=task.task_id, status=status, error=error)
        return TaskOutcome(task_id=task.task_id, status=TaskStatus.COMPLETED)

    async def _finish(
        self,
        task: TaskInput,
        status: TaskStatus,
        error: TaskError | None,
        options: WorkflowOptions,
    ) -> None:
        await workflow.execute_activity(
            "finish_task",
            FinishInput(tenant_id=task.tenant_id, task_id=task.task_id, status=status, error=error),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200)),
        )


def _ending_for(exc: ActivityError) -> tuple[TaskStatus, TaskError]:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        # Our errors carry their code as the first detail; anything else is a bug
        # or an outage inside the agent, reported under one stable code.
        code = str(cause.details[0]) if cause.details else "agent_failed"
        status = _STATUS_FOR_ERROR_TYPE.get(cause.type or "", TaskStatus.FAILED)
        return status, TaskError(code=code, message=cause.message)
    message = str(cause) if cause is not None else str(exc)
    return TaskStatus.FAILED, TaskError(code="agent_failed", message=message)
