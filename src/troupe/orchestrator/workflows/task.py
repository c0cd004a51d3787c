"""TaskWorkflow: one task from queued to a terminal status, durably.

simple: one activity; the agent records its own start, usage and result.
react:  react_step activities, each one reason → act (a tool) → observe, until the
        agent answers or the last allowed step makes it answer.
dag:    plan_task → nodes (every ready node at once, at most max_parallel_agents) →
        synthesize, which completes the task. A node that fails for good either
        fails the task or, under the ``continue`` policy, becomes a gap the synthesis
        reports (nodes that needed its output are skipped).
When the task asks for approval, the workflow waits for the ``decide`` signal after
planning (before any agent works); no decision within the timeout rejects it.
Every other ending is recorded by ``finish_task``, so storage always learns how the
task ended. The workflow only decides; storage writes happen in activities.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from troupe.domain import Plan, Strategy, TaskError, TaskStatus
    from troupe.orchestrator import dag
    from troupe.orchestrator.payloads import (
        ApprovalDecision,
        ApprovalStep,
        FinishInput,
        Gap,
        NodeOutput,
        NodesEnded,
        NodeTask,
        PlanResult,
        ReactStepResult,
        ReactStepTask,
        ReactTurn,
        SynthesisTask,
        TaskInput,
        TaskOutcome,
        WorkflowOptions,
    )

_R = TypeVar("_R")

# Error types (TroupeError class names) that end the task with a status of their own.
_STATUS_FOR_ERROR_TYPE = {"BudgetExceeded": TaskStatus.BUDGET_EXCEEDED}


class _TaskEnded(Exception):
    """Raised inside the workflow to end the task with a recorded status."""

    def __init__(self, status: TaskStatus, error: TaskError) -> None:
        super().__init__(error.message)
        self.status = status
        self.error = error


@workflow.defn(name="TaskWorkflow")
class TaskWorkflow:
    def __init__(self) -> None:
        self._options: WorkflowOptions | None = None
        self._decision: ApprovalDecision | None = None

    @workflow.signal(name="decide")
    def decide(self, decision: ApprovalDecision) -> None:
        """A human approved or rejected the plan; the first decision stands."""
        if self._decision is None:
            self._decision = decision

    @workflow.run
    async def run(self, task: TaskInput, options: WorkflowOptions) -> TaskOutcome:
        self._options = options
        try:
            if task.judge_strategy:
                chosen = await self._agent("judge_strategy", task, Strategy)
                task = task.model_copy(update={"strategy": chosen, "judge_strategy": False})
            if task.strategy is Strategy.DAG:
                await self._run_dag(task)
            elif task.strategy is Strategy.REACT:
                await self._approved(task)
                await self._run_react(task)
            else:
                await self._approved(task)
                await self._agent("run_simple_agent", task, str)
        except asyncio.CancelledError:
            await self._finish(task, TaskStatus.CANCELLED, None)
            raise
        except FailureError as exc:  # an activity failed for good
            if is_cancelled_exception(exc):  # the activity acknowledged our cancel
                await self._finish(task, TaskStatus.CANCELLED, None)
                raise  # the workflow itself ends cancelled
            status, error = _ending_for(exc)
            await self._finish(task, status, error)
            return TaskOutcome(task_id=task.task_id, status=status, error=error)
        except _TaskEnded as ended:
            await self._finish(task, ended.status, ended.error)
            return TaskOutcome(task_id=task.task_id, status=ended.status, error=ended.error)
        return TaskOutcome(task_id=task.task_id, status=TaskStatus.COMPLETED)

    async def _run_dag(self, task: TaskInput) -> None:
        planned = await self._agent("plan_task", task, PlanResult)
        if planned.require_approval:  # the policy asks it of this plan
            task = task.model_copy(update={"require_approval": True})
        await self._approved(task)
        if planned.plan is None:  # the planner failed twice: one agent answers instead
            await self._agent("run_simple_agent", task, str)
            return
        outputs, gaps = await self._run_nodes(task, planned.plan)
        await self._agent(
            "synthesize",
            SynthesisTask(task=task, how=planned.plan.synthesis, outputs=outputs, gaps=gaps),
            str,
        )

    async def _run_react(self, task: TaskInput) -> None:
        """Reason → act → observe, one activity per step; the last step must answer."""
        turns: tuple[ReactTurn, ...] = ()
        steps = self._opts.react_max_steps
        for step in range(steps):
            result = await self._agent(
                "react_step",
                ReactStepTask(task=task, turns=turns, last=step == steps - 1),
                ReactStepResult,
            )
            if result.answer is not None:
                return
            turns = (*turns, *result.new_turns)

    async def _approved(self, task: TaskInput) -> None:
        """Wait for a human's yes when the task asks for one; a no or silence rejects."""
        if not task.require_approval:
            return
        timeout_s = self._opts.approval_timeout_s
        await self._record_approval(
            ApprovalStep(
                tenant_id=task.tenant_id, task_id=task.task_id, granted=False, timeout_s=timeout_s
            )
        )
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None, timeout=timedelta(seconds=timeout_s)
            )
        except TimeoutError:
            raise _TaskEnded(
                TaskStatus.REJECTED,
                TaskError(code="approval_timeout", message=f"no decision within {timeout_s:g}s"),
            ) from None
        assert self._decision is not None
        if not self._decision.approved:
            reason = self._decision.reason or "rejected without a reason"
            raise _TaskEnded(TaskStatus.REJECTED, TaskError(code="rejected", message=reason))
        await self._record_approval(
            ApprovalStep(
                tenant_id=task.tenant_id,
                task_id=task.task_id,
                granted=True,
                reason=self._decision.reason,
            )
        )

    async def _record_approval(self, step: ApprovalStep) -> None:
        await self._bookkeeping("record_approval", step)

    async def _run_nodes(
        self, task: TaskInput, plan: Plan
    ) -> tuple[tuple[NodeOutput, ...], tuple[Gap, ...]]:
        """Run the plan's nodes, ready ones at once up to the parallel limit."""
        options = self._opts
        nodes = {node.id: node for node in plan.nodes}
        outputs: dict[str, NodeOutput] = {}
        gaps: list[Gap] = []
        started: set[str] = set()  # started, failed or skipped: never to start again
        running: dict[str, workflow.ActivityHandle[str]] = {}
        try:
            while True:
                room = options.max_parallel_agents - len(running)
                for node_id in dag.ready(plan, done=outputs.keys(), started=started, limit=room):
                    node = nodes[node_id]
                    inputs = tuple(outputs[d] for d in node.depends_on)
                    running[node_id] = self._start_agent(
                        "run_node",
                        NodeTask(task=task, node=node, inputs=inputs),
                        str,
                        node_id=node_id,
                    )
                    started.add(node_id)
                if not running:
                    break
                await workflow.wait(running.values(), return_when=asyncio.FIRST_COMPLETED)
                for node_id, handle in list(running.items()):
                    if not handle.done():
                        continue
                    del running[node_id]
                    try:
                        outputs[node_id] = NodeOutput(
                            node_id=node_id, role=nodes[node_id].role, output=handle.result()
                        )
                    except FailureError as exc:
                        if is_cancelled_exception(exc):
                            raise
                        gaps += await self._node_failed(task, plan, node_id, exc, started)
        except BaseException:
            await _cancel_all(running)
            raise
        ordered = tuple(outputs[n.id] for n in plan.nodes if n.id in outputs)
        return ordered, tuple(gaps)

    async def _node_failed(
        self,
        task: TaskInput,
        plan: Plan,
        node_id: str,
        exc: FailureError,
        started: set[str],
    ) -> list[Gap]:
        """Record a node that failed for good; end the task or skip what needed it."""
        status, error = _ending_for(exc)
        if status is not TaskStatus.FAILED or self._opts.failure_policy == "fail":
            await self._record_nodes(task, {node_id: error}, {})
            raise _TaskEnded(
                status, TaskError(code=error.code, message=f"node {node_id}: {error.message}")
            )
        blocked = sorted(dag.descendants(plan, [node_id]) - started)
        skipped = dict.fromkeys(blocked, f"needs the output of {node_id}, which failed")
        started.update(blocked)
        await self._record_nodes(task, {node_id: error}, skipped)
        return [Gap(node_id=node_id, reason=error.message)] + [
            Gap(node_id=b, reason=why) for b, why in skipped.items()
        ]

    async def _record_nodes(
        self, task: TaskInput, failed: dict[str, TaskError], skipped: dict[str, str]
    ) -> None:
        await self._bookkeeping(
            "record_nodes_ended",
            NodesEnded(
                tenant_id=task.tenant_id, task_id=task.task_id, failed=failed, skipped=skipped
            ),
        )

    @property
    def _opts(self) -> WorkflowOptions:
        assert self._options is not None
        return self._options

    def _start_agent(
        self, name: str, arg: Any, result_type: type[_R], *, node_id: str | None = None
    ) -> workflow.ActivityHandle[_R]:
        """Start one agent step, with Temporal's retries and a cancel that waits for it.

        Local (the default for new tasks): the step runs in this worker and its result
        is recorded with the workflow task, not dispatched through the server; a dead
        worker's unrecorded steps rerun elsewhere after the workflow task timeout, and
        storage hands back what they had finished. Regular: dispatched to any worker;
        a dead one is noticed by its missing heartbeats.
        """
        options = self._opts
        common: dict[str, Any] = {
            "result_type": result_type,
            "start_to_close_timeout": timedelta(seconds=options.attempt_timeout_s),
            "retry_policy": RetryPolicy(
                initial_interval=timedelta(milliseconds=200),
                maximum_attempts=options.max_attempts,
            ),
            "cancellation_type": workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        }
        if options.local_activities:
            # A local activity's record keeps no input: the id names the node it ran.
            activity_id = f"node:{node_id}" if node_id is not None else None
            return workflow.start_local_activity(name, arg, activity_id=activity_id, **common)
        heartbeat = timedelta(seconds=options.heartbeat_timeout_s)
        return workflow.start_activity(name, arg, heartbeat_timeout=heartbeat, **common)

    async def _agent(self, name: str, arg: Any, result_type: type[_R]) -> _R:
        return await self._start_agent(name, arg, result_type)

    async def _finish(self, task: TaskInput, status: TaskStatus, error: TaskError | None) -> None:
        await self._bookkeeping(
            "finish_task",
            FinishInput(tenant_id=task.tenant_id, task_id=task.task_id, status=status, error=error),
        )

    async def _bookkeeping(self, name: str, arg: Any) -> None:
        """A short, idempotent storage write, retried until it lands. Local like the
        agent steps when they are: a regular activity would wait for the workflow
        task, which waits for the agent steps still running."""
        options: dict[str, Any] = {
            "start_to_close_timeout": timedelta(seconds=30),
            "retry_policy": RetryPolicy(initial_interval=timedelta(milliseconds=200)),
        }
        if self._opts.local_activities:
            await workflow.execute_local_activity(name, arg, **options)
        else:
            await workflow.execute_activity(name, arg, **options)


async def _cancel_all(running: dict[str, workflow.ActivityHandle[str]]) -> None:
    """Cancel every running node and wait until each has really stopped."""
    for handle in running.values():
        handle.cancel()
    if running:
        await asyncio.gather(*running.values(), return_exceptions=True)


def _ending_for(exc: FailureError) -> tuple[TaskStatus, TaskError]:
    # A regular activity's failure arrives wrapped in an ActivityError; a local
    # activity's arrives as the failure itself.
    cause = exc.cause if isinstance(exc, ActivityError) else exc
    if isinstance(cause, ApplicationError):
        # Our errors carry their code as the first detail; anything else is a bug
        # or an outage inside the agent, reported under one stable code.
        code = str(cause.details[0]) if cause.details else "agent_failed"
        status = _STATUS_FOR_ERROR_TYPE.get(cause.type or "", TaskStatus.FAILED)
        return status, TaskError(code=code, message=cause.message)
    message = str(cause) if cause is not None else str(exc)
    return TaskStatus.FAILED, TaskError(code="agent_failed", message=message)
