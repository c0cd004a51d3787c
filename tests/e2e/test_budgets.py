"""Budgets through a real `troupe serve`: money per task, tokens per plan node and per
session, and the caps a request may not exceed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.processes import NO_MEMORY, TroupeProcess, new_tenant_key
from troupe.client import TroupeAPIError, TroupeClient

pytestmark = pytest.mark.e2e

SESSION_TOKENS = 150


def test_a_task_stops_at_its_money_cap(served: TroupeProcess) -> None:
    with TroupeClient(served.url, api_key=served.api_key) as client:
        task = client.wait(
            client.submit_task("What is 2+2?", strategy="simple", cost_budget_micro_usd=3).id
        )
    assert task.status == "budget_exceeded"
    assert task.cost_budget_micro_usd == 3
    assert task.error is not None
    assert "3 of 3 micro-dollars" in task.error.message
    assert task.usage.total_tokens == 0  # refused before the call: nothing spent


def test_every_plan_node_stays_within_its_token_cap(served: TroupeProcess) -> None:
    query = "Compare three message brokers: list them, then latency, then durability"
    with TroupeClient(served.url, api_key=served.api_key) as client:
        task = client.wait(client.submit_task(query, strategy="dag", node_token_budget=120).id)
    assert task.node_token_budget == 120
    assert task.nodes, task
    assert all(n.usage.total_tokens <= 120 for n in task.nodes)
    assert task.status in ("completed", "budget_exceeded")


def test_a_request_cannot_ask_for_more_than_its_tenants_caps(served: TroupeProcess) -> None:
    key = new_tenant_key(served, "capped-money", "--max-task-micro-usd", "100")
    with TroupeClient(served.url, api_key=key) as client:
        budgets = client.budgets()
        for asked in (
            {"cost_budget_micro_usd": 101},
            {"token_budget": 100, "node_token_budget": 101},
        ):
            with pytest.raises(TroupeAPIError) as refused:
                client.submit_task("x", **asked)  # type: ignore[arg-type]
            assert (refused.value.status, refused.value.code) == (422, "budget_too_large")
        assert client.submit_task("x", cost_budget_micro_usd=100).cost_budget_micro_usd == 100
    assert budgets.task.max_cost_budget_micro_usd == 100


@pytest.fixture(scope="module")
def session_capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TroupeProcess]:
    data: Path = tmp_path_factory.mktemp("session-budget")
    env = {
        **NO_MEMORY,
        "TROUPE_DATA_DIR": str(data),
        "TROUPE_BUDGETS__SESSION_TOKENS": str(SESSION_TOKENS),
    }
    process = TroupeProcess("serve", env=env, log=data / "serve.log").start()
    yield process
    assert process.stop() == 0, process.output()


def test_a_sessions_tasks_share_its_budget(session_capped: TroupeProcess) -> None:
    served = session_capped
    with TroupeClient(served.url, api_key=served.api_key) as client:
        ended = []
        for n in range(5):
            task = client.wait(
                client.submit_task(f"Question {n}?", strategy="simple", session_id="chat").id
            )
            ended.append(task)
            if task.status == "budget_exceeded":
                break
        outside = client.wait(client.submit_task("And outside?", strategy="simple").id)
        view = client.budgets()
    assert ended[-1].status == "budget_exceeded", [t.status for t in ended]
    assert ended[-1].error is not None
    assert "the session's budget" in ended[-1].error.message
    assert [t.status for t in ended[:-1]] == ["completed"] * (len(ended) - 1)
    assert sum(t.usage.total_tokens for t in ended) <= SESSION_TOKENS
    assert outside.status == "completed"  # other sessions (and none) are not affected
    assert view.session is not None
    assert view.session.tokens == SESSION_TOKENS
