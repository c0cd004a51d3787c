"""Activities of TaskWorkflow. Each is a method on a class built with its services."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity
from temporalio.exceptions import ApplicationError

from troupe.agents.runtime import AgentJob, SimpleAgent
from troupe.errors import TroupeError
from troupe.orchestrator.journal import TaskJournal
from troupe.orchestrator.payloads import FinishInput, TaskInput


class TaskActivities:
    """Side effects of a task: run its agent, record how it ended."""

    def __init__(self, agent: SimpleAgent, journal: TaskJournal, *, heartbeat_s: float) -> None:
        self._agent = agent
        self._journal = journal
        self._heartbeat_s = heartbeat_s

    @activity.defn(name="run_simple_agent")
    async def run_simple_agent(self, task: TaskInput) -> str:
        """Answer the task with one agent; records start, usage and result itself."""
        info = activity.info()
        job = AgentJob(
            tenant_id=task.tenant_id,
            task_id=task.task_id,
            query=task.query,
            token_budget=task.token_budget,
            attempt=info.attempt,
            attempt_key=f"{info.workflow_run_id}:{info.activity_id}:{info.attempt}",
        )
        async with self._heartbeating():
            try:
                answer = await self._agent.run(job)
            except TroupeError as exc:
                raise _application_error(exc) from exc
        return answer.content

    @activity.defn(name="finish_task")
    async def finish_task(self, finish: FinishInput) -> None:
        """Record a non-success ending (failed, cancelled, over budget) exactly once."""
        await self._journal.finished(
            finish.tenant_id, finish.task_id, finish.status, error=finish.error
        )

    @contextlib.asynccontextmanager
    async def _heartbeating(self) -> AsyncIterator[None]:
        # Heartbeats tell Temporal the worker is alive (a dead one is retried after the
        # heartbeat timeout) and are how a cancel request reaches this activity.
        async def beat() -> None:
            while True:
                activity.heartbeat()
                await asyncio.sleep(self._heartbeat_s)

        beater = asyncio.create_task(beat())
        try:
            yield
        finally:
            beater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beater


def _application_error(exc: TroupeError) -> ApplicationError:
    """Carry our code across Temporal; ``retryable`` decides whether Temporal retries."""
    return ApplicationError(
        exc.message, exc.code, type=type(exc).__name__, non_retryable=not exc.retryable
    )
