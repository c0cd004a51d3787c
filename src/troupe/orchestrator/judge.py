"""The optional LLM judgement of complexity routing: the small tier picks simple or dag.

The heuristic's pick comes along as the fallback: an answer that is not a usable
choice keeps it, so the judge can only refine routing, never break a task.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ValidationError

from troupe.agents.metering import CallContext, MeteredLLM
from troupe.config import OrchestratorSettings
from troupe.domain import Strategy
from troupe.llm.messages import ChatMessage, StructuredOutput
from troupe.orchestrator.journal import TaskJournal

JUDGE_PROMPT = (
    "Decide how to run the task. Answer 'simple' if one capable assistant can answer it "
    "in one go; answer 'dag' if it needs several distinct pieces of work (research, "
    "comparisons, steps) that a team of agents could do in parallel and combine. Reply "
    'with JSON: {"strategy": "simple" or "dag", "reason": one sentence}.'
)


class StrategyChoice(BaseModel):
    strategy: Literal["simple", "dag"]
    reason: str = ""


CHOICE_FORMAT = StructuredOutput(
    name="StrategyChoice", json_schema=StrategyChoice.model_json_schema()
)


class StrategyJudge:
    """Asks the small tier which strategy fits; records the choice either way."""

    def __init__(
        self, llm: MeteredLLM, journal: TaskJournal, settings: OrchestratorSettings
    ) -> None:
        self._llm = llm
        self._journal = journal
        self._settings = settings

    async def choose(
        self, ctx: CallContext, query: str, *, hint: Strategy, attempt: int
    ) -> Strategy:
        await self._journal.started(ctx.tenant_id, ctx.task_id, attempt=attempt)
        messages = (
            ChatMessage(role="system", content=JUDGE_PROMPT),
            ChatMessage(role="user", content=query),
        )
        metered = await self._llm.call(
            ctx,
            messages,
            tier=self._settings.planner_tier,
            response_format=CHOICE_FORMAT,
        )
        await self._journal.llm_call(ctx.tenant_id, ctx.task_id, metered.record)
        try:
            choice = StrategyChoice.model_validate_json(metered.response.content)
        except ValidationError:
            await self._journal.strategy_chosen(
                ctx.tenant_id,
                ctx.task_id,
                hint,
                {"by": "heuristic", "reason": "the judge gave no usable answer"},
            )
            return hint
        strategy = Strategy(choice.strategy)
        await self._journal.strategy_chosen(
            ctx.tenant_id, ctx.task_id, strategy, {"by": "judge", "reason": choice.reason[:500]}
        )
        return strategy
