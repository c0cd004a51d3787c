"""Work finished by a run that died before Temporal heard of it is not paid for twice
by the rerun: a node hands back its stored output, the planner its stored plan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from troupe.agents.metering import CallContext, MeteredLLM
from troupe.agents.runtime import AgentRuntime
from troupe.config import Settings, load_settings
from troupe.domain import Plan, PlanNode, Strategy, TaskBudgets
from troupe.llm.messages import ChatRequest
from troupe.orchestrator.journal import TaskJournal
from troupe.orchestrator.launcher import new_task_id
from troupe.orchestrator.planner import Planner
from troupe.storage import database
from troupe.storage.kv.memory import MemoryEventFanout
from troupe.storage.repositories import NewTask, SqlTaskStore
from troupe.testing import FunctionProvider, routed

pytestmark = pytest.mark.integration

NODE = PlanNode(id="only", role="analyst", instructions="look")
PLAN = Plan(nodes=(NODE,), synthesis="merge")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(None, data_dir=str(tmp_path))


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[SqlTaskStore]:
    engine = database.create_engine(settings.database_url)
    await database.upgrade(engine)
    store = SqlTaskStore(engine)
    yield store
    await store.aclose()


async def _dag_task(store: SqlTaskStore) -> str:
    task_id = new_task_id()
    await store.create_task(
        NewTask(
            id=task_id,
            tenant_id="acme",
            session_id=None,
            query="q",
            strategy=Strategy.DAG,
            token_budget=5000,
            workflow_id="w",
        )
    )
    return task_id


def _ctx(task_id: str, run: int, node_id: str | None = None) -> CallContext:
    return CallContext(
        tenant_id="acme",
        task_id=task_id,
        budgets=TaskBudgets(task_tokens=5000),
        attempt_key=f"run:act:{run}",
        node_id=node_id,
    )


async def test_a_retried_node_returns_the_stored_output_without_a_new_call(
    store: SqlTaskStore, settings: Settings
) -> None:
    async def answer(request: ChatRequest) -> str:
        return "the node's finding"

    provider = FunctionProvider(answer)
    runtime = AgentRuntime(
        MeteredLLM(routed(provider, settings.llm), settings.llm, store),
        TaskJournal(store, MemoryEventFanout()),
        settings.llm,
        settings.orchestrator,
    )
    task_id = await _dag_task(store)
    await store.save_plan("acme", task_id, PLAN)

    first = await runtime.run_node(_ctx(task_id, 1, "only"), "q", NODE, ())
    # The first run stored its output, then its worker died before reporting to Temporal.
    second = await runtime.run_node(_ctx(task_id, 2, "only"), "q", NODE, ())
    assert first == second == "the node's finding"
    assert len(provider.requests) == 1
    calls = await store.usage_calls("acme", task_id)
    assert [c.node_id for c in calls] == ["only"]
    (stored,) = await store.task_nodes("acme", task_id)
    assert stored.usage == (await store.get_task("acme", task_id)).usage
    assert stored.attempts == 1  # a start that found the output is not counted


async def test_a_rerun_planner_returns_the_stored_plan_without_a_new_call(
    store: SqlTaskStore, settings: Settings
) -> None:
    async def plan(request: ChatRequest) -> str:
        return PLAN.model_dump_json()

    provider = FunctionProvider(plan)
    planner = Planner(
        MeteredLLM(routed(provider, settings.llm), settings.llm, store),
        TaskJournal(store, MemoryEventFanout()),
        settings.orchestrator,
    )
    task_id = await _dag_task(store)

    first = await planner.plan(_ctx(task_id, 1), "q", attempt=1)
    # A local activity's rerun after its worker died starts at attempt 1 again.
    second = await planner.plan(_ctx(task_id, 2), "q", attempt=1)
    assert first.plan == second.plan == PLAN
    assert len(provider.requests) == 1
    assert len(await store.usage_calls("acme", task_id)) == 1
