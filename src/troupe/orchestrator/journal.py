"""The one writer of a task's lifecycle: storage first, then fan-out and metrics.

Storage is the record; the fan-out only wakes stream readers; metrics count what
storage accepted, so a re-delivered write is neither re-announced nor re-counted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from troupe.agents.metering import BudgetLedger, CallContext
from troupe.domain import Actor, AgentStep, EventType, Plan, Strategy, Task, TaskError, TaskStatus
from troupe.llm.router import Fallback
from troupe.observability import metrics
from troupe.storage.kv.base import EventFanout
from troupe.storage.ledger import Budget
from troupe.storage.repositories import (
    DayBudgetStatus,
    LLMCallRecord,
    NodeStart,
    SqlTaskStore,
    budget_alerts,
    day_counter,
    day_status_of,
)

if TYPE_CHECKING:
    # Imported by app.py only when configured: the redis client costs start-up time.
    from troupe.storage.kv.ledger import RedisBudgetLedger

logger = logging.getLogger(__name__)


class TaskJournal:
    """Status transitions, metered calls and events of tasks, announced to listeners.

    Budgets live in the database with the tasks (the store is the ledger, and recording
    a call settles it in the same transaction), or in Redis (``budgets.ledger``); then a
    call is settled there first, so a crash in between leaves its use counted.
    """

    def __init__(
        self,
        store: SqlTaskStore,
        fanout: EventFanout,
        *,
        redis_ledger: RedisBudgetLedger | None = None,
        alert_threshold: float = 0.8,
        on_completed: Callable[[Task], Awaitable[None]] | None = None,
    ) -> None:
        self._on_completed = on_completed
        self._store = store
        self._fanout = fanout
        self._redis_ledger = redis_ledger
        self._threshold = alert_threshold

    async def started(self, tenant_id: str, task_id: str, *, attempt: int) -> Task:
        started = await self._store.mark_started(tenant_id, task_id, attempt=attempt)
        task = started.task
        if started.first and task.started_at is not None:
            waited = (task.started_at - task.created_at).total_seconds()
            metrics.TASK_QUEUE_SECONDS.labels(strategy=task.strategy.value).observe(waited)
        await self._fanout.publish(task_id)
        return task

    async def moved(
        self,
        tenant_id: str,
        task_id: str,
        status: TaskStatus,
        event: EventType,
        data: dict[str, Any],
    ) -> Task:
        task = await self._store.move(tenant_id, task_id, status, event, data)
        await self._fanout.publish(task_id)
        return task

    async def aclose(self) -> None:
        if self._redis_ledger is not None:
            await self._redis_ledger.aclose()

    @property
    def ledger(self) -> BudgetLedger:
        """Where calls reserve against their budgets."""
        return self._redis_ledger or self._store

    async def day_status(self, tenant_id: str, limits: Budget | None = None) -> DayBudgetStatus:
        """The tenant's budget today (UTC), from whichever ledger holds it."""
        if self._redis_ledger is None:
            return await self._store.day_budget(tenant_id, limits)
        day = datetime.now(UTC).date().isoformat()
        counter = day_counter(tenant_id, day)
        found = (await self._redis_ledger.counters([counter])).get(counter)
        return day_status_of(day, found, limits, self._threshold)

    async def fix_context(self, tenant_id: str, task_id: str, context: str) -> str:
        """Fix the task's context once; the text every agent of the task then sees."""
        return await self._store.set_context(tenant_id, task_id, context)

    async def task(self, tenant_id: str, task_id: str) -> Task:
        return await self._store.get_task(tenant_id, task_id)

    async def llm_call(self, tenant_id: str, task_id: str, call: LLMCallRecord) -> None:
        await self._settle_in_redis(tenant_id, task_id, call)
        if await self._store.record_llm_call(tenant_id, task_id, call):
            await self._fanout.publish(task_id)
            await self._counted(tenant_id, call)

    async def _settle_in_redis(
        self, tenant_id: str, task_id: str, call: LLMCallRecord | None
    ) -> None:
        """With the Redis ledger: settle the call there (once), and raise its alerts."""
        if self._redis_ledger is None or call is None or call.cache_hit:
            return
        settled = await self._redis_ledger.settle(
            tenant_id,
            task_id,
            call.call_key,
            tokens=call.usage.total_tokens,
            micro_usd=call.usage.cost_micro_usd,
        )
        for event, data in budget_alerts(settled, call.usage, self._threshold):
            await self._store.append_event(tenant_id, task_id, event, data)

    async def policy_denied(self, actor: Actor, task_id: str, action: str, reason: str) -> None:
        """The policy refused something a task's agent tried (the task ends with it)."""
        data = {"action": action, "reason": reason}
        await self.event(actor.tenant_id, task_id, EventType.POLICY_DENIED, data)

    async def llm_fallback(self, ctx: CallContext, fallback: Fallback) -> None:
        """A call left a provider for the next candidate (the router counts the metric)."""
        data = {
            "node_id": ctx.node_id,
            "provider": fallback.provider,
            "model": fallback.model,
            "reason": fallback.reason,
            "detail": fallback.detail,
        }
        await self.event(ctx.tenant_id, ctx.task_id, EventType.LLM_FALLBACK, data)

    async def strategy_chosen(
        self, tenant_id: str, task_id: str, strategy: Strategy, data: dict[str, Any]
    ) -> None:
        await self._store.set_strategy(tenant_id, task_id, strategy, data)
        await self._fanout.publish(task_id)

    async def plan_created(self, tenant_id: str, task_id: str, plan: Plan) -> None:
        await self._store.save_plan(tenant_id, task_id, plan)
        await self._fanout.publish(task_id)

    async def event(
        self, tenant_id: str, task_id: str, type_: EventType, data: dict[str, Any]
    ) -> None:
        await self._store.append_event(tenant_id, task_id, type_, data)
        await self._fanout.publish(task_id)

    async def agent_step(self, tenant_id: str, task_id: str, step: AgentStep) -> None:
        """A tool-using agent's step, with its metering and BeliefState."""
        await self._store.record_agent_step(tenant_id, task_id, step)
        await self._fanout.publish(task_id)

    async def node_started(self, tenant_id: str, task_id: str, node_id: str) -> NodeStart:
        start = await self._store.node_started(tenant_id, task_id, node_id)
        if start.output is None:
            await self._fanout.publish(task_id)
        return start

    async def node_completed(
        self, tenant_id: str, task_id: str, node_id: str, output: str, call: LLMCallRecord
    ) -> None:
        await self._settle_in_redis(tenant_id, task_id, call)
        if await self._store.node_completed(tenant_id, task_id, node_id, output, call):
            await self._fanout.publish(task_id)
            await self._counted(tenant_id, call)

    async def nodes_ended_without_output(
        self,
        tenant_id: str,
        task_id: str,
        *,
        failed: dict[str, TaskError],
        skipped: dict[str, str],
    ) -> None:
        await self._store.nodes_ended_without_output(
            tenant_id, task_id, failed=failed, skipped=skipped
        )
        await self._fanout.publish(task_id)

    async def finished(
        self,
        tenant_id: str,
        task_id: str,
        status: TaskStatus,
        *,
        result: str | None = None,
        error: TaskError | None = None,
        call: LLMCallRecord | None = None,
    ) -> None:
        """End the task once; ``call`` is the metered call that produced ``result``."""
        await self._settle_in_redis(tenant_id, task_id, call)
        ended = await self._store.finish(
            tenant_id, task_id, status, result=result, error=error, call=call
        )
        task = ended.task
        if self._redis_ledger is not None:
            # Calls that never recorded (cancelled, crashed) hold nothing any more.
            await self._redis_ledger.release_all(tenant_id, task_id)
        if task is None:
            # Already ended: a re-delivered write is neither re-announced nor re-counted.
            if call is not None and ended.call_stored:
                await self._fanout.publish(task_id)
                await self._counted(tenant_id, call)
            return
        metrics.TASKS_FINISHED.labels(strategy=task.strategy.value, status=status.value).inc()
        elapsed = (task.finished_at or datetime.now(UTC)) - task.created_at
        metrics.TASK_SECONDS.labels(strategy=task.strategy.value, status=status.value).observe(
            elapsed.total_seconds()
        )
        logger.info(
            "task finished status=%s tokens=%d cost_micro_usd=%d",
            status.value,
            task.usage.total_tokens,
            task.usage.cost_micro_usd,
            extra={"task_id": task_id, "tenant_id": tenant_id},
        )
        # Readers first: the gauge's read and the memory write are not on their path.
        await self._fanout.publish(task_id)
        if call is not None and ended.call_stored:
            await self._counted(tenant_id, call)
        if status is TaskStatus.COMPLETED and self._on_completed is not None:
            try:
                await self._on_completed(task)
            except Exception:
                # The task is done and recorded; memory is derived from that record and
                # must not undo it. The loss is logged, with the task to re-remember.
                logger.exception(
                    "remembering a completed task failed",
                    extra={"task_id": task_id, "tenant_id": tenant_id},
                )

    async def _counted(self, tenant_id: str, call: LLMCallRecord) -> None:
        """Count a stored call, and show how much of its tenant's day is used."""
        _count_call(tenant_id, call)
        if call.cache_hit:
            return
        utilization = (await self.day_status(tenant_id)).utilization
        if utilization is not None:
            metrics.BUDGET_DAILY_UTILIZATION.labels(tenant=tenant_id).set(utilization)


def _count_call(tenant_id: str, call: LLMCallRecord) -> None:
    if call.cache_hit:
        return  # no provider call: no tokens, no cost, no provider latency
    labels = {"provider": call.provider, "model": call.model}
    usage = call.usage
    metrics.LLM_TOKENS.labels(tenant=tenant_id, kind="prompt", **labels).inc(usage.prompt_tokens)
    metrics.LLM_TOKENS.labels(tenant=tenant_id, kind="completion", **labels).inc(
        usage.completion_tokens
    )
    metrics.LLM_COST.labels(tenant=tenant_id, **labels).inc(usage.cost_micro_usd)
    metrics.LLM_CALL_SECONDS.labels(**labels).observe(call.latency_ms / 1000)
