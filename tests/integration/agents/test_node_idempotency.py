"""A node finished by a crashed attempt is not paid for twice by the retry."""

from __future__ import annotations

from pathlib import Path

import pytest

from troupe.agents.metering import CallContext, MeteredLLM
from troupe.agents.runtime import AgentRuntime
from troupe.config import Settings, load_settings
from troupe.domain import Plan, PlanNode, Strategy, TaskBudgets
from troupe.llm.messages import ChatRequest
from troupe.orchestrator.journal import TaskJournal
from troupe.orchestrator.launcher import new_task_id
from troupe.storage import database
from troupe.storage.kv.memory import MemoryEventFanout
from troupe.storage.repositories import NewTask, SqlTaskStore
from troupe.testing import FunctionProvider, routed

pytestmark = pytest.mark.integration


async def test_a_retried_node_returns_the_stored_output_without_a_new_call(
    tmp_path: Path,
) -> None:
    settings = load_settings(None, data_dir=str(tmp_path))
    engine = database.create_engine(settings.database_url)
    await database.upgrade(engine)
    store = SqlTaskStore(engine)
    try:
        await _retried_node_is_not_paid_twice(store, settings)
    finally:
        await store.aclose()


async def _retried_node_is_not_paid_twice(store: SqlTaskStore, settings: Settings) -> None:
    journal = TaskJournal(store, MemoryEventFanout())

    async def answer(request: ChatRequest) -> str:
        return "the node's finding"

    provider = FunctionProvider(answer)
    runtime = AgentRuntime(
        MeteredLLM(routed(provider, settings.llm), settings.llm, store),
        journal,
        settings.llm,
        settings.orchestrator,
    )
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
    node = PlanNode(id="only", role="analyst", instructions="look")
    await store.save_plan("acme", task_id, Plan(nodes=(node,), synthesis="merge"))

    def ctx(attempt: int) -> CallContext:
        return CallContext(
            tenant_id="acme",
            task_id=task_id,
            budgets=TaskBudgets(task_tokens=5000),
            attempt_key=f"run:act:{attempt}",
            node_id="only",
        )

    first = await runtime.run_node(ctx(1), "q", node, (), attempt=1)
    # Attempt 1 stored its output, then its worker died before reporting to Temporal.
    second = await runtime.run_node(ctx(2), "q", node, (), attempt=2)
    assert first == second == "the node's finding"
    assert len(provider.requests) == 1
    calls = await store.usage_calls("acme", task_id)
    assert [c.node_id for c in calls] == ["only"]
    (stored,) = await store.task_nodes("acme", task_id)
    assert stored.usage == (await store.get_task("acme", task_id)).usage
