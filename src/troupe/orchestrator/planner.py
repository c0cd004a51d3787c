"""The planner: an LLM call with structured output that turns a task into a Plan.

An invalid plan (bad JSON, or not a DAG the orchestrator can run) is sent back once
with the reason; if the second one is invalid too, the task falls back to the simple
strategy and the fallback is recorded as an event.
"""

from __future__ import annotations

import json
import logging

from pydantic import ValidationError

from troupe.agents.metering import CallContext, MeteredLLM
from troupe.config import OrchestratorSettings
from troupe.domain import EventType, Plan
from troupe.llm.messages import ChatMessage, StructuredOutput
from troupe.orchestrator import dag
from troupe.orchestrator.journal import TaskJournal
from troupe.orchestrator.payloads import PlanResult
from troupe.policy.authorizer import Authorizer

logger = logging.getLogger(__name__)

PLAN_FORMAT = StructuredOutput(name="Plan", json_schema=Plan.model_json_schema())


def planner_prompt(max_nodes: int) -> str:
    return (
        "You are the planner of a team of AI agents. Split the task into at most "
        f"{max_nodes} sub-tasks, each for one specialist agent, as a DAG: every node has "
        "an id (lowercase letters, digits, '-' or '_'), a role, precise instructions, a "
        "model tier (small, medium or large: pick the cheapest that can do it), and "
        "depends_on: the ids of the nodes whose outputs it needs. Nodes without "
        "dependencies between them run in parallel, so only add a dependency when the "
        "output is really needed. Finally say how to synthesize the outputs into the "
        "answer. Reply with JSON matching the schema, nothing else."
    )


class Planner:
    """Asks for a plan, validates it, repairs it once, or gives up cleanly."""

    def __init__(
        self,
        llm: MeteredLLM,
        journal: TaskJournal,
        settings: OrchestratorSettings,
        *,
        authorizer: Authorizer | None = None,
    ) -> None:
        self._llm = llm
        self._journal = journal
        self._settings = settings
        self._authorizer = authorizer

    async def plan(self, ctx: CallContext, query: str, *, attempt: int) -> PlanResult:
        task = await self._journal.started(ctx.tenant_id, ctx.task_id, attempt=attempt)
        if task.plan is not None:
            # An earlier run planned it and died before the plan reached Temporal (a
            # local activity's result is recorded with its workflow task): its nodes
            # may have run already, so the same plan stands, and it is not paid twice.
            return PlanResult(plan=task.plan, require_approval=await self._approval(ctx, task.plan))
        messages: tuple[ChatMessage, ...] = (
            ChatMessage(role="system", content=planner_prompt(self._settings.max_nodes)),
            ChatMessage(role="user", content=query),
        )
        problem = ""
        for index in range(2):  # the first plan, then one repair
            metered = await self._llm.call(
                ctx,
                messages,
                tier=self._settings.planner_tier,
                index=index,
                response_format=PLAN_FORMAT,
            )
            await self._journal.llm_call(ctx.tenant_id, ctx.task_id, metered.record)
            content = metered.response.content
            try:
                plan = Plan.model_validate_json(content)
                dag.validate(plan, max_nodes=self._settings.max_nodes)
            except (ValidationError, dag.PlanInvalid) as exc:
                problem = _describe(exc)
                logger.info("plan rejected: %s", problem, extra={"task_id": ctx.task_id})
                messages = (
                    *messages,
                    ChatMessage(role="assistant", content=content),
                    ChatMessage(
                        role="user",
                        content=f"That plan is invalid: {problem}. Reply with a corrected plan.",
                    ),
                )
                continue
            await self._journal.plan_created(ctx.tenant_id, ctx.task_id, plan)
            return PlanResult(plan=plan, require_approval=await self._approval(ctx, plan))
        reason = f"the planner gave no valid plan after one repair: {problem}"
        await self._journal.event(
            ctx.tenant_id, ctx.task_id, EventType.PLAN_FALLBACK, {"reason": reason}
        )
        return PlanResult(plan=None, fallback_reason=reason)

    async def _approval(self, ctx: CallContext, plan: Plan) -> bool:
        if self._authorizer is None or ctx.actor is None:
            return False
        return await _approval_check(self._authorizer, ctx, plan)


async def _approval_check(authorizer: Authorizer, ctx: CallContext, plan: Plan) -> bool:
    """Ask the policy about the plan itself (its width and its tools): PolicyDenied ends
    the task; True when a human must approve it first."""
    assert ctx.actor is not None
    request = {
        "strategy": "dag",
        "token_budget": ctx.budgets.task_tokens,
        "require_approval": False,
        "plan": {
            "width": max(len(layer) for layer in dag.layers(plan)),
            "nodes": len(plan.nodes),
            "tools": sorted({tool for node in plan.nodes for tool in node.tools}),
        },
    }
    decision = await authorizer.require("task.submit", ctx.actor, request, task_id=ctx.task_id)
    return decision.require_approval


def _describe(exc: ValidationError | dag.PlanInvalid) -> str:
    if isinstance(exc, dag.PlanInvalid):
        return exc.message
    problems = [
        f"{'.'.join(str(p) for p in e['loc']) or 'plan'}: {e['msg']}"
        for e in exc.errors(include_url=False)
    ]
    return json.dumps(problems[:5])
