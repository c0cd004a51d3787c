"""The one bridge from the gateway to Temporal: submit, cancel, approve, replay tasks."""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import UTC, datetime, timedelta

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode

from troupe.config import Settings
from troupe.domain import (
    Actor,
    EventType,
    Strategy,
    Task,
    TaskBudgets,
    TaskError,
    TaskStatus,
)
from troupe.errors import Conflict, NotFound, Unavailable
from troupe.observability import metrics
from troupe.observability.tracing import current_trace_id
from troupe.orchestrator.journal import TaskJournal
from troupe.orchestrator.payloads import ApprovalDecision, TaskInput, WorkflowOptions
from troupe.orchestrator.replay import fetch_history, replay_history
from troupe.orchestrator.report import ReplayReport
from troupe.orchestrator.routing import choose_strategy
from troupe.orchestrator.workflows.task import TaskWorkflow
from troupe.storage.kv.base import EventFanout
from troupe.storage.ledger import Budget
from troupe.storage.repositories import NewTask, SqlTaskStore, day_counter, day_exhausted

logger = logging.getLogger(__name__)

TASK_ID_PREFIX = "tsk_"


def new_task_id() -> str:
    return TASK_ID_PREFIX + secrets.token_hex(12)


class TaskLauncher:
    """Turns an accepted request into a stored task and a started TaskWorkflow."""

    def __init__(
        self,
        *,
        client: Client,
        store: SqlTaskStore,
        journal: TaskJournal,
        fanout: EventFanout,
        settings: Settings,
    ) -> None:
        self._client = client
        self._store = store
        self._journal = journal
        self._fanout = fanout
        self._settings = settings
        self._options = WorkflowOptions.from_settings(settings)

    def _default_budgets(self, token_budget: int) -> TaskBudgets:
        budgets = self._settings.budgets
        return TaskBudgets(
            task_tokens=token_budget,
            task_micro_usd=self._settings.tasks.default_cost_budget_micro_usd,
            node_tokens=budgets.node_tokens,
            session_tokens=budgets.session_tokens,
            session_micro_usd=budgets.session_micro_usd,
            day_tokens=budgets.tenant_daily_tokens,
            day_micro_usd=budgets.tenant_daily_micro_usd,
        )

    async def submit(
        self,
        *,
        tenant_id: str,
        query: str,
        session_id: str | None,
        strategy: Strategy | None,
        token_budget: int,
        require_approval: bool = False,
        use_cache: bool = True,
        user_id: str | None = None,
        api_key_id: str | None = None,
        max_active: int | None = None,
        key_max_active: int | None = None,
        budgets: TaskBudgets | None = None,
        day: Budget | None = None,
        actor: Actor | None = None,
    ) -> Task:
        """Store the task, then start its workflow; the task is accepted only once both hold.

        ``strategy`` None lets complexity routing choose. ``max_active`` (default
        ``limits.max_concurrent_tasks``) and ``key_max_active`` cap the unfinished tasks
        of the tenant and of the submitting key. ``budgets``: every limit the task's
        calls draw on (default: ``token_budget`` and the configured limits); ``day``:
        the tenant's budget for today, refused (``budget_exhausted``) when used up.
        """
        if budgets is None:
            budgets = self._default_budgets(token_budget)
        if day is None:
            today = datetime.now(UTC).date().isoformat()
            day = Budget(day_counter(tenant_id, today), budgets.day_tokens, budgets.day_micro_usd)
        judge = strategy is None and self._settings.orchestrator.complexity_judge
        if strategy is None:
            strategy = choose_strategy(query, self._settings.orchestrator)
        task_id = new_task_id()
        if self._journal.ledger is not self._store:
            # Budgets live in Redis: the day is checked there (the database's is empty).
            if (await self._journal.day_status(tenant_id, day)).exhausted:
                raise day_exhausted(day, datetime.now(UTC))
            day = None
        task = await self._store.create_task(
            NewTask(
                id=task_id,
                tenant_id=tenant_id,
                session_id=session_id,
                query=query,
                strategy=strategy,
                token_budget=token_budget,
                workflow_id=f"task-{task_id}",
                user_id=user_id,
                api_key_id=api_key_id,
                cost_budget_micro_usd=budgets.task_micro_usd,
                node_token_budget=budgets.node_tokens,
                # The submitting request's trace: the workflow's spans join it.
                trace_id=current_trace_id(),
            ),
            max_active=max_active or self._settings.limits.max_concurrent_tasks,
            key_max_active=key_max_active,
            day=day,
        )
        try:
            await self._client.start_workflow(
                TaskWorkflow.run,
                args=[
                    TaskInput(
                        tenant_id=tenant_id,
                        task_id=task_id,
                        query=query,
                        token_budget=token_budget,
                        strategy=strategy,
                        require_approval=require_approval,
                        use_cache=use_cache,
                        judge_strategy=judge,
                        session_id=session_id,
                        budgets=budgets,
                        actor=actor,
                    ),
                    self._options,
                ],
                id=task.workflow_id,
                task_queue=self._settings.temporal.task_queue,
                # When a worker shares this client (troupe serve), its first workflow
                # task comes back with the start reply instead of through a poll.
                request_eager_start=True,
                # With local activities, how long a dead worker's task waits before
                # another worker takes it over (and reruns the steps it had not recorded).
                task_timeout=timedelta(seconds=self._settings.tasks.workflow_task_timeout_s),
            )
        except RPCError as exc:
            logger.error("could not start workflow: %s", exc, extra={"task_id": task_id})
            error = TaskError(code="engine_unavailable", message="the workflow engine refused")
            await self._journal.finished(tenant_id, task_id, TaskStatus.FAILED, error=error)
            raise Unavailable(
                "the workflow engine is unavailable; the task was not accepted",
                code="engine_unavailable",
            ) from exc
        metrics.TASKS_SUBMITTED.labels(strategy=strategy.value).inc()
        return task

    async def cancel(self, *, tenant_id: str, task_id: str) -> Task:
        """Ask the workflow to cancel; the workflow records the ending."""
        task = await self._store.get_task(tenant_id, task_id)
        if task.status.terminal:
            raise Conflict(
                f"task {task_id} already ended as {task.status.value}", code="task_ended"
            )
        await self._store.append_event(tenant_id, task_id, EventType.CANCEL_REQUESTED, {})
        await self._fanout.publish(task_id)
        try:
            await self._client.get_workflow_handle(task.workflow_id).cancel()
        except RPCError as exc:
            raise Unavailable(
                "the workflow engine is unavailable; try cancelling again",
                code="engine_unavailable",
            ) from exc
        return task

    async def decide(self, *, tenant_id: str, task_id: str, approved: bool, reason: str) -> Task:
        """Pass a human's decision to a task that waits for one."""
        task = await self._store.get_task(tenant_id, task_id)
        if task.status is not TaskStatus.AWAITING_APPROVAL:
            raise Conflict(
                f"task {task_id} is {task.status.value}, not awaiting approval",
                code="not_awaiting_approval",
            )
        try:
            await self._client.get_workflow_handle(task.workflow_id).signal(
                TaskWorkflow.decide, ApprovalDecision(approved=approved, reason=reason)
            )
        except RPCError as exc:
            raise Unavailable(
                "the workflow engine is unavailable; try again", code="engine_unavailable"
            ) from exc
        return task

    async def history(self, *, tenant_id: str, task_id: str) -> WorkflowHistory:
        """The task's workflow history as Temporal recorded it; whole, once the task
        has ended."""
        task = await self._store.get_task(tenant_id, task_id)
        try:
            if task.status.terminal:
                await self._workflow_closed(task)
            return await fetch_history(self._client, task.workflow_id)
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                raise NotFound(
                    f"Temporal no longer has the history of task {task_id}",
                    code="history_not_found",
                ) from exc
            raise Unavailable(
                "the workflow engine is unavailable", code="engine_unavailable"
            ) from exc

    async def _workflow_closed(self, task: Task) -> None:
        """Wait for the workflow of an ended task to close.

        Storage learns of an ending first: a local activity records the result, and
        the workflow task carrying its marker to Temporal completes just after.
        """
        handle = self._client.get_workflow_handle(task.workflow_id)
        wait_s = 3 * self._settings.tasks.workflow_task_timeout_s  # a takeover included
        try:
            async with asyncio.timeout(wait_s):
                await handle.result()
        except WorkflowFailureError:
            pass  # failed or cancelled: closed all the same
        except TimeoutError:
            raise Conflict(
                f"task {task.id} has ended, but its workflow is still open after {wait_s:g}s",
                code="workflow_open",
            ) from None

    async def replay(self, *, tenant_id: str, task_id: str) -> ReplayReport:
        """Replay the task's history against this code and compare with storage."""
        history = await self.history(tenant_id=tenant_id, task_id=task_id)
        task = await self._store.get_task(tenant_id, task_id)
        if not task.status.terminal:
            raise Conflict(
                f"task {task_id} is still {task.status.value}; replay it once it has ended",
                code="task_not_ended",
            )
        nodes = await self._store.task_nodes(tenant_id, task_id)
        return await replay_history(history, task=task, nodes=nodes)

    async def ping(self) -> None:
        try:
            await self._client.workflow_service.get_system_info(GetSystemInfoRequest())
        except RPCError as exc:
            raise Unavailable("Temporal is unreachable", code="engine_unavailable") from exc
