"""Token reservations against a task's budget, on SQLite and PostgreSQL: all or nothing,
settled or released exactly once, never more settled than the budget. And the usage
summary over the recorded calls."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from troupe.domain import Strategy, TaskStatus, Usage
from troupe.errors import BudgetExceeded, RateLimited
from troupe.orchestrator.launcher import new_task_id
from troupe.storage.repositories import LLMCallRecord, NewTask, SqlTaskStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(migrated_engine: AsyncEngine) -> SqlTaskStore:
    return SqlTaskStore(migrated_engine)


async def _task(
    store: SqlTaskStore,
    budget: int,
    *,
    tenant: str = "acme",
    session_id: str | None = None,
    max_active: int | None = None,
) -> str:
    task_id = new_task_id()
    await store.create_task(
        NewTask(
            id=task_id,
            tenant_id=tenant,
            session_id=session_id,
            query="q",
            strategy=Strategy.SIMPLE,
            token_budget=budget,
            workflow_id=f"task-{task_id}",
        ),
        max_active=max_active,
    )
    return task_id


def _call(key: str, prompt: int, completion: int) -> LLMCallRecord:
    return LLMCallRecord(
        call_key=key,
        provider="simulation",
        model="sim-small",
        usage=Usage(prompt_tokens=prompt, completion_tokens=completion, cost_micro_usd=1),
        cached_tokens=0,
        latency_ms=1,
    )


async def _room(store: SqlTaskStore, task_id: str) -> int:
    """What is left to reserve (budget - used - held), asked of the ledger itself."""
    try:
        grant = await store.reserve_tokens("acme", task_id, "probe", want=10**9, minimum=1)
    except BudgetExceeded:
        return 0
    await store.release_tokens("acme", task_id, "probe")
    return grant


async def test_a_grant_is_all_it_asks_when_there_is_room(store: SqlTaskStore) -> None:
    task_id = await _task(store, 1000)
    assert await store.reserve_tokens("acme", task_id, "c1", want=300, minimum=50) == 300
    assert await _room(store, task_id) == 700


async def test_a_short_budget_shrinks_the_grant_down_to_the_minimum(store: SqlTaskStore) -> None:
    task_id = await _task(store, 1000)
    await store.reserve_tokens("acme", task_id, "c1", want=900, minimum=50)
    assert await store.reserve_tokens("acme", task_id, "c2", want=300, minimum=50) == 100
    with pytest.raises(BudgetExceeded, match="at least 50 tokens"):
        await store.reserve_tokens("acme", task_id, "c3", want=300, minimum=50)


async def test_asking_again_with_the_same_key_returns_the_same_grant(store: SqlTaskStore) -> None:
    task_id = await _task(store, 1000)
    first = await store.reserve_tokens("acme", task_id, "c1", want=300, minimum=50)
    again = await store.reserve_tokens("acme", task_id, "c1", want=300, minimum=50)
    assert first == again == 300
    assert await _room(store, task_id) == 700


async def test_recording_the_call_settles_its_reservation(store: SqlTaskStore) -> None:
    task_id = await _task(store, 1000)
    await store.reserve_tokens("acme", task_id, "c1", want=300, minimum=50)
    assert await store.record_llm_call("acme", task_id, _call("c1", 120, 30))
    assert await _room(store, task_id) == 850  # 1000 - 150 used, nothing held
    assert not await store.record_llm_call("acme", task_id, _call("c1", 120, 30))
    assert await _room(store, task_id) == 850  # a re-delivered record settles nothing


async def test_a_release_gives_the_tokens_back_once(store: SqlTaskStore) -> None:
    task_id = await _task(store, 1000)
    await store.reserve_tokens("acme", task_id, "c1", want=300, minimum=50)
    await store.release_tokens("acme", task_id, "c1")
    await store.release_tokens("acme", task_id, "c1")
    assert await _room(store, task_id) == 1000


async def test_an_attempts_first_call_releases_what_dead_attempts_held(store: SqlTaskStore) -> None:
    task_id = await _task(store, 1000)
    await store.reserve_tokens("acme", task_id, "run:act-1:1:0", want=400, minimum=50)
    await store.reserve_tokens("acme", task_id, "run:act-2:1:0", want=400, minimum=50)
    granted = await store.reserve_tokens(
        "acme", task_id, "run:act-1:2:0", want=500, minimum=50, stale_prefix="run:act-1:"
    )
    assert granted == 500  # attempt 1 of act-1 gave its 400 back; act-2 keeps its own
    assert await _room(store, task_id) == 100


async def test_the_end_of_a_task_drops_every_reservation(store: SqlTaskStore) -> None:
    task_id = await _task(store, 1000)
    await store.reserve_tokens("acme", task_id, "c1", want=300, minimum=50)
    await store.finish("acme", task_id, TaskStatus.CANCELLED)
    assert await _room(store, task_id) == 1000


async def test_another_tenant_cannot_reserve_on_the_task(store: SqlTaskStore) -> None:
    task_id = await _task(store, 1000)
    with pytest.raises(Exception, match="not found"):
        await store.reserve_tokens("globex", task_id, "c1", want=300, minimum=50)


async def test_fifty_concurrent_agents_never_settle_more_than_the_budget(
    store: SqlTaskStore,
) -> None:
    budget, per_call = 1000, 100
    task_id = await _task(store, budget)

    async def agent(n: int) -> bool:
        key = f"agent-{n}"
        try:
            granted = await store.reserve_tokens(
                "acme", task_id, key, want=per_call, minimum=per_call
            )
        except BudgetExceeded:
            return False
        await asyncio.sleep(0)  # let the others in between reserve and settle
        await store.record_llm_call("acme", task_id, _call(key, granted - 40, 40))
        return True

    outcomes = await asyncio.gather(*(agent(n) for n in range(50)))
    task = await store.get_task("acme", task_id)
    assert task.usage.total_tokens <= budget
    assert sum(outcomes) == budget // per_call  # the arithmetic: 10 fit, 40 are refused
    assert task.usage.total_tokens == budget
    assert await _room(store, task_id) == 0  # all spent, nothing left held


async def test_usage_summary_groups_by_day_model_and_session(store: SqlTaskStore) -> None:
    from datetime import UTC, datetime, timedelta

    alone = await _task(store, 10_000)
    in_session = await _task(store, 10_000, session_id="chat-1")
    await store.record_llm_call("acme", alone, _call("a1", 100, 10))
    await store.record_llm_call("acme", in_session, _call("b1", 200, 20))
    other = LLMCallRecord(
        call_key="b2",
        provider="openai",
        model="gpt-4.1-mini",
        usage=Usage(prompt_tokens=0, completion_tokens=0, cost_micro_usd=0),
        cached_tokens=0,
        latency_ms=0,
        cache_hit=True,
    )
    await store.record_llm_call("acme", in_session, other)
    foreign = await _task(store, 10_000)
    await store.finish("acme", foreign, TaskStatus.CANCELLED)
    await _task(store, 10_000, tenant="globex")

    today = datetime.now(UTC).date()
    summary = await store.usage_summary("acme", today - timedelta(days=1), today)
    assert (summary.total.calls, summary.total.cache_hits) == (3, 1)
    assert (summary.total.prompt_tokens, summary.total.completion_tokens) == (300, 30)
    assert summary.total.cost_micro_usd == 2
    assert [(line.key, line.calls) for line in summary.by_day] == [((today.isoformat(),), 3)]
    assert [(line.key, line.prompt_tokens) for line in summary.by_model] == [
        (("openai", "gpt-4.1-mini"), 0),
        (("simulation", "sim-small"), 300),
    ]
    by_session = {line.key: line.prompt_tokens for line in summary.by_session}
    assert by_session == {(None,): 100, ("chat-1",): 200}
    assert (await store.usage_summary("globex", today, today)).total.calls == 0
    yesterday = today - timedelta(days=1)
    assert (await store.usage_summary("acme", yesterday, yesterday)).total.calls == 0


async def test_unfinished_tasks_are_capped_even_under_concurrent_submissions(
    store: SqlTaskStore,
) -> None:
    async def submit() -> str | None:
        """None when accepted, else the refusal's code."""
        try:
            await _task(store, 100, tenant="capped", max_active=5)
        except RateLimited as exc:
            return exc.code
        return None

    outcomes = await asyncio.gather(*(submit() for _ in range(20)))
    assert outcomes.count(None) == 5
    assert outcomes.count("too_many_tasks") == 15
    page = await store.list_tasks("capped", limit=50)
    await store.finish("capped", page.items[0].id, TaskStatus.CANCELLED)
    assert await submit() is None  # an ended task frees its place
    assert await submit() == "too_many_tasks"


@pytest.fixture
def daily(migrated_engine: AsyncEngine) -> SqlTaskStore:
    """A store whose tenants may use 1,000 tokens a day, alerting at 80 %."""
    return SqlTaskStore(migrated_engine, tenant_daily_tokens=1000, alert_threshold=0.8)


async def test_the_tenants_day_caps_grants_across_its_tasks(daily: SqlTaskStore) -> None:
    first, second, third = [await _task(daily, 10_000) for _ in range(3)]
    assert await daily.reserve_tokens("acme", first, "a", want=800, minimum=50) == 800
    assert await daily.reserve_tokens("acme", second, "b", want=500, minimum=50) == 200
    with pytest.raises(BudgetExceeded, match="daily budget of 1000 tokens"):
        await daily.reserve_tokens("acme", third, "c", want=500, minimum=50)
    status = await daily.day_budget("acme")
    assert (status.limit, status.used, status.reserved) == (1000, 0, 1000)
    other_tenant = await _task(daily, 10_000, tenant="globex")
    assert await daily.reserve_tokens("globex", other_tenant, "g", want=900, minimum=50) == 900


async def test_settling_moves_tokens_from_reserved_to_used(daily: SqlTaskStore) -> None:
    task_id = await _task(daily, 10_000)
    await daily.reserve_tokens("acme", task_id, "a", want=500, minimum=50)
    await daily.reserve_tokens("acme", task_id, "b", want=300, minimum=50)
    await daily.record_llm_call("acme", task_id, _call("a", 200, 100))
    await daily.release_tokens("acme", task_id, "b")
    status = await daily.day_budget("acme")
    assert (status.used, status.reserved) == (300, 0)
    task = await daily.get_task("acme", task_id)
    assert task.usage.total_tokens == 300


async def test_crossing_the_alert_threshold_is_an_event_once(daily: SqlTaskStore) -> None:
    task_id = await _task(daily, 10_000)
    for key, prompt in (("a", 500), ("b", 250), ("c", 100)):  # 500 → 750 → 850 (> 800)
        await daily.reserve_tokens("acme", task_id, key, want=prompt, minimum=1)
        await daily.record_llm_call("acme", task_id, _call(key, prompt - 40, 40))
    alerts = [e for e in await daily.events_after("acme", task_id, 0) if e.type == "budget.alert"]
    assert [(a.data["used_tokens"], a.data["limit_tokens"]) for a in alerts] == [(850, 1000)]


async def test_a_used_up_day_refuses_new_tasks_until_midnight(daily: SqlTaskStore) -> None:
    task_id = await _task(daily, 10_000)
    await daily.reserve_tokens("acme", task_id, "a", want=1000, minimum=1)
    await daily.record_llm_call("acme", task_id, _call("a", 900, 100))
    with pytest.raises(RateLimited) as refused:
        await _task(daily, 10_000)
    assert refused.value.code == "budget_exhausted"
    assert 0 < refused.value.retry_after_s <= 86_400
    assert "resets at" in refused.value.message


async def test_two_processes_of_agents_never_settle_more_than_the_budget(
    empty_database_url: str, migrated_engine: AsyncEngine
) -> None:
    import json
    import sys

    store = SqlTaskStore(migrated_engine)
    budget, per_call = 2000, 100
    task_id = await _task(store, budget)

    async def process(tag: str) -> dict[str, int]:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.storage.ledger_hammer",
            empty_database_url,
            task_id,
            "25",
            str(per_call),
            tag,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await child.communicate()
        assert child.returncode == 0, err.decode()
        result: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
        return result

    one, two = await asyncio.gather(process("one"), process("two"))
    task = await store.get_task("acme", task_id)
    assert one["settled"] + two["settled"] == budget // per_call  # 20 fit, 30 refused
    assert one["refused"] + two["refused"] == 50 - budget // per_call
    assert task.usage.total_tokens == budget
    assert await _room(store, task_id) == 0
