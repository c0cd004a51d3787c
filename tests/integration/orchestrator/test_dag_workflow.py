"""The dag strategy on the real Temporal dev server: plan, parallel nodes, synthesis."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from tests.integration.orchestrator.conftest import both_activity_kinds
from tests.integration.orchestrator.rig import TENANT, RigFactory
from tests.integration.orchestrator.team import Team, plan_json, team_provider
from troupe.domain import EventType, NodeStatus, Strategy, TaskStatus
from troupe.errors import ProviderError

pytestmark = pytest.mark.integration


@both_activity_kinds
async def test_a_five_wide_fan_out_runs_its_agents_at_once(
    rig: RigFactory, local_activities: bool
) -> None:
    team = Team(plans=[plan_json(*((f"n{i}", []) for i in range(5)))], node_seconds=0.6)
    async with rig(team_provider(team), orchestrator={"local_activities": local_activities}) as r:
        task = await r.until_ended((await r.submit(strategy=Strategy.DAG)).id)
        assert task.status is TaskStatus.COMPLETED
        assert task.result == "the final answer"
        assert team.peak == 5
        events = await r.events(task.id)
        starts = [e.created_at for e in events if e.type is EventType.NODE_STARTED]
        ends = [e.created_at for e in events if e.type is EventType.NODE_COMPLETED]
        assert len(starts) == len(ends) == 5
        # One layer of 0.6 s, not five in a row (3 s).
        assert (max(ends) - min(starts)).total_seconds() < 1.5


async def test_no_more_than_max_parallel_agents_run_at_once(rig: RigFactory) -> None:
    team = Team(plans=[plan_json(*((f"n{i}", []) for i in range(7)))], node_seconds=0.3)
    async with rig(team_provider(team), orchestrator={"max_parallel_agents": 3}) as r:
        task = await r.until_ended((await r.submit(strategy=Strategy.DAG)).id)
        assert task.status is TaskStatus.COMPLETED
        assert team.peak == 3
        assert len(team.node_requests) == 7


async def test_a_diamond_passes_each_node_its_dependencies_outputs(rig: RigFactory) -> None:
    team = Team(plans=[plan_json(("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"]))])
    async with rig(team_provider(team)) as r:
        task = await r.until_ended((await r.submit(strategy=Strategy.DAG)).id)
        assert task.status is TaskStatus.COMPLETED

        def sees(node: str) -> str:
            return team.node_requests[node].messages[-1].content

        assert "output of" not in sees("a")
        assert "output of a" in sees("b")
        assert "output of a" in sees("c")
        assert "output of b" in sees("d")
        assert "output of c" in sees("d")
        assert "output of a" not in sees("d")  # only direct dependencies
        synthesis = team.synthesis[0].messages[-1].content
        assert all(f"output of {n}" in synthesis for n in "abcd")
        nodes = await r.store.task_nodes(TENANT, task.id)
        assert [(n.node_id, n.status) for n in nodes] == [(n, NodeStatus.COMPLETED) for n in "abcd"]
        assert all(n.usage.total_tokens > 0 for n in nodes)
        stored = await r.store.get_task(TENANT, task.id)
        assert stored.plan is not None
        assert stored.strategy is Strategy.DAG


@both_activity_kinds
async def test_under_the_fail_policy_a_failed_node_fails_the_task_and_stops_the_rest(
    rig: RigFactory, local_activities: bool
) -> None:
    bad = ProviderError("model refused", code="provider_rejected", retryable=False)
    team = Team(
        plans=[plan_json(("slow", []), ("bad", []))], fail={"bad": bad}, seconds={"slow": 30}
    )
    team_slow = team
    async with rig(team_provider(team), orchestrator={"local_activities": local_activities}) as r:
        task = await r.until_ended((await r.submit(strategy=Strategy.DAG)).id)
        assert task.status is TaskStatus.FAILED
        assert task.error is not None
        assert task.error.code == "provider_rejected"
        assert "node bad" in task.error.message
        assert team_slow.synthesis == []
        nodes = {n.node_id: n for n in await r.store.task_nodes(TENANT, task.id)}
        assert nodes["bad"].status is NodeStatus.FAILED
        assert nodes["slow"].status is NodeStatus.CANCELLED  # stopped, and closed in storage


async def test_under_the_continue_policy_synthesis_reports_the_gap(rig: RigFactory) -> None:
    bad = ProviderError("model refused", code="provider_rejected", retryable=False)
    team = Team(
        plans=[plan_json(("good", []), ("bad", []), ("after-bad", ["bad"]))], fail={"bad": bad}
    )
    async with rig(team_provider(team), orchestrator={"failure_policy": "continue"}) as r:
        task = await r.until_ended((await r.submit(strategy=Strategy.DAG)).id)
        assert task.status is TaskStatus.COMPLETED
        synthesis = team.synthesis[0].messages[-1].content
        assert "output of good" in synthesis
        assert "bad: model refused" in synthesis
        assert "after-bad: needs the output of bad" in synthesis
        nodes = {n.node_id: n.status for n in await r.store.task_nodes(TENANT, task.id)}
        assert nodes == {
            "good": NodeStatus.COMPLETED,
            "bad": NodeStatus.FAILED,
            "after-bad": NodeStatus.SKIPPED,
        }
        assert "after-bad" not in team.node_requests
        types = await r.event_types(task.id)
        assert EventType.NODE_FAILED in types
        assert EventType.NODE_SKIPPED in types


async def test_an_invalid_plan_is_repaired_once(rig: RigFactory) -> None:
    cyclic = plan_json(("a", ["b"]), ("b", ["a"]))
    team = Team(plans=[cyclic, plan_json(("a", []), ("b", ["a"]))])
    provider = team_provider(team)
    async with rig(provider) as r:
        task = await r.until_ended((await r.submit(strategy=Strategy.DAG)).id)
        assert task.status is TaskStatus.COMPLETED
        planner_calls = [q for q in provider.requests if q.response_format is not None]
        assert len(planner_calls) == 2
        assert "cycle" in planner_calls[1].messages[-1].content
        assert (await r.event_types(task.id)).count(EventType.PLAN_CREATED) == 1


async def test_two_invalid_plans_fall_back_to_one_agent_and_say_why(rig: RigFactory) -> None:
    team = Team(plans=["not json at all"])
    async with rig(team_provider(team)) as r:
        task = await r.until_ended((await r.submit(strategy=Strategy.DAG)).id)
        assert task.status is TaskStatus.COMPLETED
        events = await r.events(task.id)
        fallback = [e for e in events if e.type is EventType.PLAN_FALLBACK]
        assert len(fallback) == 1
        assert "no valid plan" in str(fallback[0].data["reason"])
        assert EventType.PLAN_CREATED not in [e.type for e in events]
        assert team.node_requests == {}
        assert team.simple == 1  # one agent answered instead
        assert task.result == "one agent's answer"


@both_activity_kinds
async def test_cancel_mid_dag_stops_every_running_agent(
    rig: RigFactory, local_activities: bool
) -> None:
    gate = asyncio.Event()  # never set: nodes hang until cancelled
    team = Team(plans=[plan_json(("x", []), ("y", []), ("z", ["x"]))], gate=gate)
    async with rig(team_provider(team), orchestrator={"local_activities": local_activities}) as r:
        task = await r.submit(strategy=Strategy.DAG)
        async with asyncio.timeout(30):
            while team.running < 2:
                await asyncio.sleep(0.02)
        await r.launcher.cancel(tenant_id=TENANT, task_id=task.id)
        ended = await r.until_ended(task.id)
        assert ended.status is TaskStatus.CANCELLED
        assert team.cancelled == 2
        assert "z" not in team.node_requests
        assert team.synthesis == []
        nodes = {n.node_id: n.status for n in await r.store.task_nodes(TENANT, task.id)}
        assert nodes == dict.fromkeys("xyz", NodeStatus.CANCELLED)


async def test_a_budget_that_runs_out_mid_dag_keeps_the_finished_nodes(rig: RigFactory) -> None:
    chain = plan_json(("a", []), ("b", ["a"]), ("c", ["b"]))
    async with rig(team_provider(Team(plans=[chain])), llm={"max_tokens": 20}) as r:
        # A first run with room to spare says what each call costs.
        full = await r.until_ended((await r.submit(strategy=Strategy.DAG, budget=50_000)).id)
        assert full.status is TaskStatus.COMPLETED
        used = [e.data for e in await r.events(full.id) if e.type is EventType.LLM_CALL]
        plan_and_a = sum(c["prompt_tokens"] + c["completion_tokens"] for c in used[:2])
        # Room for the plan and node a, and for half of node b's prompt.
        budget = plan_and_a + used[2]["prompt_tokens"] // 2
        refusals = REGISTRY.get_sample_value("troupe_budget_refusals_total") or 0.0
        task = await r.until_ended((await r.submit(strategy=Strategy.DAG, budget=budget)).id)
        # Node b's call was not made (once per attempt: tasks.max_attempts is 2 here, but
        # a budget refusal is not retried).
        assert REGISTRY.get_sample_value("troupe_budget_refusals_total") == refusals + 1
        assert task.status is TaskStatus.BUDGET_EXCEEDED
        assert task.error is not None
        assert task.error.code == "budget_exceeded"
        assert "node b" in task.error.message
        assert task.usage.total_tokens == plan_and_a <= budget
        nodes = {n.node_id: n for n in await r.store.task_nodes(TENANT, task.id)}
        assert nodes["a"].status is NodeStatus.COMPLETED
        assert nodes["a"].output == "output of a"  # the partial result stays readable
        assert nodes["b"].status is NodeStatus.FAILED
        assert nodes["c"].status in {NodeStatus.PENDING, NodeStatus.CANCELLED}
