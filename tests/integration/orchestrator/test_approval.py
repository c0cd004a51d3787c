"""Human approval: the workflow waits after planning for a yes, a no, or the timeout."""

from __future__ import annotations

import pytest

from tests.integration.orchestrator.rig import TENANT, RigFactory
from tests.integration.orchestrator.team import Team, plan_json, team_provider
from troupe.domain import EventType, Strategy, TaskStatus
from troupe.errors import Conflict

pytestmark = pytest.mark.integration


def _team() -> Team:
    return Team(plans=[plan_json(("a", []), ("b", ["a"]))])


async def test_an_approved_plan_runs_and_the_wait_is_visible(rig: RigFactory) -> None:
    team = _team()
    async with rig(team_provider(team)) as r:
        task = await r.submit(strategy=Strategy.DAG, require_approval=True)
        await r.until_status(task.id, TaskStatus.AWAITING_APPROVAL)
        waiting = await r.store.get_task(TENANT, task.id)
        assert waiting.plan is not None  # the plan is there to be judged
        assert [n.id for n in waiting.plan.nodes] == ["a", "b"]
        assert team.node_requests == {}  # nothing ran before the decision

        await r.launcher.decide(tenant_id=TENANT, task_id=task.id, approved=True, reason="ok")
        ended = await r.until_ended(task.id)
        assert ended.status is TaskStatus.COMPLETED
        assert set(team.node_requests) == {"a", "b"}
        events = await r.events(task.id)
        granted = [e for e in events if e.type is EventType.APPROVAL_GRANTED]
        assert [e.data["reason"] for e in granted] == ["ok"]
        types = [e.type for e in events]
        assert types.index(EventType.PLAN_CREATED) < types.index(EventType.APPROVAL_REQUESTED)
        assert types.index(EventType.APPROVAL_GRANTED) < types.index(EventType.NODE_STARTED)


async def test_a_rejected_plan_ends_rejected_with_the_reason(rig: RigFactory) -> None:
    team = _team()
    async with rig(team_provider(team)) as r:
        task = await r.submit(strategy=Strategy.DAG, require_approval=True)
        await r.until_status(task.id, TaskStatus.AWAITING_APPROVAL)
        await r.launcher.decide(
            tenant_id=TENANT, task_id=task.id, approved=False, reason="too expensive"
        )
        ended = await r.until_ended(task.id)
        assert ended.status is TaskStatus.REJECTED
        assert ended.error is not None
        assert (ended.error.code, ended.error.message) == ("rejected", "too expensive")
        assert team.node_requests == {}
        assert (await r.event_types(task.id))[-1] is EventType.REJECTED


async def test_no_decision_within_the_timeout_rejects(rig: RigFactory) -> None:
    team = _team()
    async with rig(team_provider(team), orchestrator={"approval_timeout_s": 1}) as r:
        task = await r.submit(strategy=Strategy.DAG, require_approval=True)
        ended = await r.until_ended(task.id)
        assert ended.status is TaskStatus.REJECTED
        assert ended.error is not None
        assert ended.error.code == "approval_timeout"
        assert team.node_requests == {}


async def test_a_simple_task_can_wait_for_approval_too(rig: RigFactory) -> None:
    team = _team()
    async with rig(team_provider(team)) as r:
        task = await r.submit(require_approval=True)
        await r.until_status(task.id, TaskStatus.AWAITING_APPROVAL)
        assert team.simple == 0
        await r.launcher.decide(tenant_id=TENANT, task_id=task.id, approved=True, reason="")
        ended = await r.until_ended(task.id)
        assert ended.status is TaskStatus.COMPLETED
        assert team.simple == 1


async def test_deciding_a_task_that_does_not_wait_is_a_conflict(rig: RigFactory) -> None:
    async with rig(team_provider(_team())) as r:
        task = await r.until_ended((await r.submit()).id)
        with pytest.raises(Conflict) as caught:
            await r.launcher.decide(tenant_id=TENANT, task_id=task.id, approved=True, reason="")
        assert caught.value.code == "not_awaiting_approval"
