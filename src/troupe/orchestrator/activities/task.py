"""Activities of TaskWorkflow: thin wrappers that bind Temporal's attempt identity to
plain async services (agents, planner, journal), which record their own progress."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator

from temporalio import activity
from temporalio.exceptions import ApplicationError

from troupe.agents.memory import TaskContexts
from troupe.agents.metering import CallContext
from troupe.agents.react import ReactAgent
from troupe.agents.runtime import AgentRuntime
from troupe.domain import EventType, Strategy, TaskStatus
from troupe.errors import TroupeError
from troupe.observability import metrics
from troupe.orchestrator.journal import TaskJournal
from troupe.orchestrator.judge import StrategyJudge
from troupe.orchestrator.payloads import (
    ApprovalStep,
    FinishInput,
    NodesEnded,
    NodeTask,
    PlanResult,
    ReactStepResult,
    ReactStepTask,
    SynthesisTask,
    TaskInput,
)
from troupe.orchestrator.planner import Planner


class TaskActivities:
    """Side effects of a task: plan it, run its agents, record how it ended."""

    def __init__(
        self,
        runtime: AgentRuntime,
        planner: Planner,
        react: ReactAgent,
        judge: StrategyJudge,
        journal: TaskJournal,
        *,
        heartbeat_s: float,
        contexts: TaskContexts | None = None,
    ) -> None:
        self._contexts = contexts
        self._runtime = runtime
        self._react = react
        self._judge = judge
        self._planner = planner
        self._journal = journal
        self._heartbeat_s = heartbeat_s

    @activity.defn(name="run_simple_agent")
    async def run_simple_agent(self, task: TaskInput) -> str:
        """Answer the task with one agent; records start, usage and result itself."""
        ctx = _context(task)
        async with self._guarded("simple"):
            query = await self._prompt(ctx, task.query)
            return await self._runtime.answer(ctx, query, attempt=_attempt())

    @activity.defn(name="judge_strategy")
    async def judge_strategy(self, task: TaskInput) -> Strategy:
        """The small tier picks simple or dag; the heuristic's pick is the fallback."""
        async with self._guarded("judge"):
            return await self._judge.choose(
                _context(task), task.query, hint=task.strategy, attempt=_attempt()
            )

    @activity.defn(name="plan_task")
    async def plan_task(self, task: TaskInput) -> PlanResult:
        """Ask the planner for a DAG; records the plan, or the fallback and its reason."""
        ctx = _context(task)
        async with self._guarded("planner"):
            query = await self._prompt(ctx, task.query)
            return await self._planner.plan(ctx, query, attempt=_attempt())

    @activity.defn(name="run_node")
    async def run_node(self, job: NodeTask) -> str:
        """One node's agent; records its start, usage and output itself."""
        ctx = _context(job.task, node_id=job.node.id)
        async with self._guarded("node"):
            query = await self._prompt(ctx, job.task.query)
            return await self._runtime.run_node(ctx, query, job.node, job.inputs)

    @activity.defn(name="synthesize")
    async def synthesize(self, job: SynthesisTask) -> str:
        """Fan the nodes' outputs in; completes the task with the answer."""
        ctx = _context(job.task)
        async with self._guarded("synthesis"):
            query = await self._prompt(ctx, job.task.query)
            return await self._runtime.synthesize(ctx, query, job.how, job.outputs, job.gaps)

    @activity.defn(name="react_step")
    async def react_step(self, job: ReactStepTask) -> ReactStepResult:
        """One reason → act → observe step; the answering step completes the task."""
        ctx = _context(job.task)
        async with self._guarded("react_step"):
            query = await self._prompt(ctx, job.task.query)
            return await self._react.step(ctx, query, job.turns, attempt=_attempt(), last=job.last)

    @activity.defn(name="record_nodes_ended")
    async def record_nodes_ended(self, ended: NodesEnded) -> None:
        """Record nodes that failed for good and the ones skipped because of them."""
        await self._journal.nodes_ended_without_output(
            ended.tenant_id, ended.task_id, failed=ended.failed, skipped=ended.skipped
        )

    @activity.defn(name="record_approval")
    async def record_approval(self, step: ApprovalStep) -> None:
        """The task waits for a human (or the wait ended with a yes)."""
        if step.granted:
            await self._journal.moved(
                step.tenant_id,
                step.task_id,
                TaskStatus.RUNNING,
                EventType.APPROVAL_GRANTED,
                {"reason": step.reason},
            )
        else:
            await self._journal.moved(
                step.tenant_id,
                step.task_id,
                TaskStatus.AWAITING_APPROVAL,
                EventType.APPROVAL_REQUESTED,
                {"timeout_s": step.timeout_s},
            )

    @activity.defn(name="finish_task")
    async def finish_task(self, finish: FinishInput) -> None:
        """Record a non-success ending (failed, cancelled, over budget) exactly once."""
        await self._journal.finished(
            finish.tenant_id, finish.task_id, finish.status, error=finish.error
        )

    async def _prompt(self, ctx: CallContext, query: str) -> str:
        """The question as agents see it: after the session's context, if any."""
        if self._contexts is None:
            return query
        return await self._contexts.prompt_for(ctx, query)

    @contextlib.asynccontextmanager
    async def _guarded(self, agent: str) -> AsyncIterator[None]:
        """Heartbeat while the body runs; carry TroupeErrors across as coded failures;
        time the attempt and count it when it is a retry."""

        # Heartbeats tell Temporal the worker is alive (a dead one is retried after the
        # heartbeat timeout) and are how a cancel request reaches this activity. The
        # first waits one interval: a step that ends sooner costs the server no RPC.
        async def beat() -> None:
            while True:
                await asyncio.sleep(self._heartbeat_s)
                activity.heartbeat()

        info = activity.info()
        if info.attempt > 1:
            metrics.ACTIVITY_RETRIES.labels(activity=info.activity_type).inc()
        began = time.perf_counter()
        outcome = "error"
        # A local activity is cancelled in-process and its worker's liveness is the
        # workflow task's: it has nobody to heartbeat to.
        beater = None if info.is_local else asyncio.create_task(beat())
        try:
            yield
            outcome = "ok"
        except TroupeError as exc:
            raise _application_error(exc) from exc
        finally:
            if beater is not None:
                beater.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beater
            seconds = time.perf_counter() - began
            metrics.AGENT_SECONDS.labels(agent=agent, outcome=outcome).observe(seconds)


def _attempt() -> int:
    return activity.info().attempt


def _context(task: TaskInput, *, node_id: str | None = None) -> CallContext:
    info = activity.info()
    attempt = str(info.attempt)
    if info.is_local:
        # A local activity that dies with its worker reruns with the same attempt
        # number; its calls must not pass for the dead run's, which are already metered.
        attempt += "." + secrets.token_hex(4)
    return CallContext(
        tenant_id=task.tenant_id,
        task_id=task.task_id,
        budgets=task.limits,
        session_id=task.session_id,
        actor=task.actor,
        use_cache=task.use_cache,
        attempt_key=f"{info.workflow_run_id}:{info.activity_id}:{attempt}",
        activity_key=f"{info.workflow_run_id}:{info.activity_id}",
        node_id=node_id,
    )


def _application_error(exc: TroupeError) -> ApplicationError:
    """Carry our code across Temporal; ``retryable`` decides whether Temporal retries."""
    return ApplicationError(
        exc.message, exc.code, type=type(exc).__name__, non_retryable=not exc.retryable
    )
