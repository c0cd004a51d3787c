"""Auto strategy with the LLM judge: the small tier may move a task to a team."""

from __future__ import annotations

import json

import pytest

from tests.integration.orchestrator.rig import TENANT, RigFactory
from tests.integration.orchestrator.team import Team, plan_json, team_provider
from troupe.domain import EventType, Strategy, TaskStatus
from troupe.llm.messages import ChatRequest
from troupe.testing import FunctionProvider

pytestmark = pytest.mark.integration


class JudgingTeam(Team):
    """A Team that also answers the judge."""

    verdict: str = ""

    async def __call__(self, request: ChatRequest) -> str:
        if request.response_format is not None and request.response_format.name == "StrategyChoice":
            return self.verdict
        return await super().__call__(request)


async def _auto(r_rig: RigFactory, team: JudgingTeam) -> tuple[Strategy, list[EventType], str]:
    async with r_rig(team_provider(team), orchestrator={"complexity_judge": True}) as r:
        submitted = await r.launcher.submit(
            tenant_id=TENANT,
            query="short question",
            session_id=None,
            strategy=None,
            token_budget=5000,
        )
        task = await r.until_ended(submitted.id)
        assert task.status is TaskStatus.COMPLETED
        events = await r.events(task.id)
        chosen = [e for e in events if e.type is EventType.STRATEGY_CHOSEN]
        assert len(chosen) == 1
        return task.strategy, [e.type for e in events], str(chosen[0].data["by"])


async def test_the_judge_can_send_a_short_task_to_a_team(rig: RigFactory) -> None:
    team = JudgingTeam(plans=[plan_json(("a", []), ("b", []))])
    team.verdict = json.dumps({"strategy": "dag", "reason": "two parts"})
    strategy, types, by = await _auto(rig, team)
    assert strategy is Strategy.DAG
    assert by == "judge"
    assert EventType.PLAN_CREATED in types
    assert set(team.node_requests) == {"a", "b"}


async def test_an_unusable_verdict_keeps_the_heuristic_pick(rig: RigFactory) -> None:
    team = JudgingTeam(plans=[plan_json(("a", []))])
    team.verdict = "I think a team would be lovely"
    strategy, types, by = await _auto(rig, team)
    assert strategy is Strategy.SIMPLE  # what the heuristic said for a short question
    assert by == "heuristic"
    assert team.simple == 1
    assert EventType.PLAN_CREATED not in types


async def test_without_the_judge_no_call_is_made(rig: RigFactory) -> None:
    seen: list[ChatRequest] = []

    async def respond(request: ChatRequest) -> str:
        seen.append(request)
        return "fine"

    async with rig(FunctionProvider(respond)) as r:
        submitted = await r.launcher.submit(
            tenant_id=TENANT, query="short", session_id=None, strategy=None, token_budget=5000
        )
        task = await r.until_ended(submitted.id)
        assert task.strategy is Strategy.SIMPLE
        assert len(seen) == 1
        assert EventType.STRATEGY_CHOSEN not in await r.event_types(task.id)
