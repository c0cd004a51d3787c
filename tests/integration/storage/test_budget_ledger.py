"""Reservations against every budget of a call (task, node, session, tenant day; tokens
and micro-dollars) on SQLite and PostgreSQL: all or nothing, settled or released exactly
once, never more settled than a limit. And the usage summary over the recorded calls."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from troupe.domain import Strategy, TaskStatus, Usage
from troupe.errors import BudgetExceeded, RateLimited
from troupe.orchestrator.launcher import new_task_id
from troupe.storage.ledger import Ask, Budget
from troupe.storage.repositories import LLMCallRecord, NewTask, SqlTaskStore, day_counter

pytestmark = pytest.mark.integration

# Each test task's token budget, by task id (the caller names a call's limits).
LIMITS: dict[str, int] = {}


@pytest.fixture
def store(migrated_engine: AsyncEngine) -> SqlTaskStore:
    return SqlTaskStore(migrated_engine, alert_threshold=0.8)


def today(tenant: str = "acme", tokens: int | None = None, usd: int | None = None) -> Budget:
    return Budget(day_counter(tenant, datetime.now(UTC).date().isoformat()), tokens, usd)


async def _task(
    store: SqlTaskStore,
    budget: int,
    *,
    tenant: str = "acme",
    session_id: str | None = None,
    max_active: int | None = None,
    day: Budget | None = None,
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
        day=day,
    )
    LIMITS[task_id] = budget
    return task_id


async def _reserve(
    store: SqlTaskStore,
    task_id: str,
    key: str,
    *,
    want: int,
    minimum: int,
    also: tuple[Budget, ...] = (),
    tenant: str = "acme",
    stale_prefix: str | None = None,
) -> int:
    """Reserve ``want`` tokens, at least ``minimum``, against the task's budget (and
    ``also``); the tokens granted."""
    budgets = [Budget(f"task:{task_id}", LIMITS[task_id]), *also]
    ask = Ask(prompt_tokens=minimum - 1, answer_tokens=want - minimum + 1)
    grant = await store.reserve(
        tenant, task_id, key, budgets=budgets, ask=ask, stale_prefix=stale_prefix
    )
    return grant.tokens


def _call(key: str, prompt: int, completion: int, cost: int = 1) -> LLMCallRecord:
    return LLMCallRecord(
        call_key=key,
        provider="simulation",
        model="sim-small",
        usage=Usage(prompt_tokens=prompt, completion_tokens=completion, cost_micro_usd=cost),
        cached_tokens=0,
        latency_ms=1,
    )


async def _room(store: SqlTaskStore, task_id: str) -> int:
    """What is left to reserve (budget - used - held), asked of the ledger itself."""
    try:
        grant = await _reserve(store, task_id, "probe", want=10**9, minimum=1)
    except BudgetExceeded:
        return 0
    await store.release("acme", task_id, "probe")
    return grant


async def test_a_grant_is_all_it_asks_when_there_is_room(store: SqlTaskStore) -> None:
    task_id = await _task(store, 1000)
    assert await _reserve(store, task_id, "c1", want=300, minimum=50) == 300
    assert await _room(store, task_id) == 700


async def test_a_short_budget_shrinks_the_grant_down_to_the_minimum(store: SqlTaskStore) -> None:
    task_id = await _task(store, 1000)
    await _reserve(store, task_id, "c1", want=900, minimum=50)
    assert await _reserve(store, task_id, "c2", want=300, minimum=50) == 100
    with pytest.raises(BudgetExceeded, match="at least 50 tokens"):
        await _reserve(store, task_id, "c3", want=300, minimum=50)


async def test_asking_again_with_the_same_key_returns_the_same_grant(store: SqlTaskStore) -> None:
    task_id = await _task(store, 1000)
    first = await _reserve(store, task_id, "c1", want=300, minimum=50)
    again = await _reserve(store, task_id, "c1", want=300, minimum=50)
    assert first == again == 300
    assert await _room(store, task_id) == 700


async def test_recording_the_call_settles_its_reservation(store: SqlTaskStore) -> None:
    task_id = await _task(store, 1000)
    await _reserve(store, task_id, "c1", want=300, minimum=50)
    assert await store.record_llm_call("acme", task_id, _call("c1", 120, 30))
    assert await _room(store, task_id) == 850  # 1000 - 150 used, nothing held
    assert not await store.record_llm_call("acme", task_id, _call("c1", 120, 30))
    assert await _room(store, task_id) == 850  # a re-delivered record settles nothing


async def test_a_release_gives_the_tokens_back_once(store: SqlTaskStore) -> None:
    task_id = await _task(store, 1000)
    await _reserve(store, task_id, "c1", want=300, minimum=50)
    await store.release("acme", task_id, "c1")
    await store.release("acme", task_id, "c1")
    assert await _room(store, task_id) == 1000


async def test_an_attempts_first_call_releases_what_dead_attempts_held(store: SqlTaskStore) -> None:
    task_id = await _task(store, 1000)
    await _reserve(store, task_id, "run:act-1:1:0", want=400, minimum=50)
    await _reserve(store, task_id, "run:act-2:1:0", want=400, minimum=50)
    granted = await _reserve(
        store, task_id, "run:act-1:2:0", want=500, minimum=50, stale_prefix="run:act-1:"
    )
    assert granted == 500  # attempt 1 of act-1 gave its 400 back; act-2 keeps its own
    assert await _room(store, task_id) == 100


async def test_the_end_of_a_task_drops_every_reservation(store: SqlTaskStore) -> None:
    task_id = await _task(store, 1000)
    await _reserve(store, task_id, "c1", want=300, minimum=50)
    await store.finish("acme", task_id, TaskStatus.CANCELLED)
    assert await _room(store, task_id) == 1000


async def test_another_tenant_cannot_reserve_on_the_task(store: SqlTaskStore) -> None:
    task_id = await _task(store, 1000)
    with pytest.raises(Exception, match="not found"):
        await _reserve(store, task_id, "c1", want=300, minimum=50, tenant="globex")


async def test_fifty_concurrent_agents_never_settle_more_than_the_budget(
    store: SqlTaskStore,
) -> None:
    budget, per_call = 1000, 100
    task_id = await _task(store, budget)

    async def agent(n: int) -> bool:
        key = f"agent-{n}"
        try:
            granted = await _reserve(store, task_id, key, want=per_call, minimum=per_call)
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


async def test_a_call_is_held_on_every_budget_or_on_none(store: SqlTaskStore) -> None:
    first, second = await _task(store, 10_000), await _task(store, 10_000)
    node = Budget(f"node:{first}:n1", 300)
    session = Budget("session:acme:s1", 500)
    # The node's cap is the shortest: the grant shrinks to it.
    assert await _reserve(store, first, "a", want=800, minimum=50, also=(node, session)) == 300
    # Another task of the session: only 200 of the session are left.
    assert await _reserve(store, second, "b", want=800, minimum=50, also=(session,)) == 200
    # The session is spent: refused, and the refusal names the session's budget.
    with pytest.raises(BudgetExceeded, match="the session's budget has 0 of 500 tokens"):
        await _reserve(store, second, "c", want=100, minimum=50, also=(session,))
    # Nothing was held on the task for the refused call (all or none).
    assert await _room(store, second) == 10_000 - 200
    await store.release("acme", first, "a")
    assert await _reserve(store, second, "d", want=800, minimum=50, also=(session,)) == 300


async def test_money_limits_shorten_the_answer_at_the_dearest_price(
    store: SqlTaskStore,
) -> None:
    task_id = await _task(store, 100_000)
    # 100 prompt tokens at 2 µ$/token and answers at 10 µ$/token, 1,000 µ$ of room:
    # 200 µ$ of prompt leaves 800 µ$, so at most 80 tokens of answer.
    ask = Ask(prompt_tokens=100, answer_tokens=500, input_price=2_000_000, output_price=10_000_000)
    money = Budget(f"task:{task_id}", 100_000, 1_000)
    grant = await store.reserve("acme", task_id, "m1", budgets=[money], ask=ask)
    assert (grant.answer_tokens, grant.tokens, grant.micro_usd) == (80, 180, 1_000)
    with pytest.raises(BudgetExceeded, match="0 of 1000 micro-dollars"):
        await store.reserve("acme", task_id, "m2", budgets=[money], ask=ask)
    # Settled at the provider's real cost, the rest comes back.
    await store.record_llm_call("acme", task_id, _call("m1", 100, 50, cost=700))
    grant = await store.reserve("acme", task_id, "m3", budgets=[money], ask=ask)
    assert grant.answer_tokens == 10  # 300 µ$ left: 200 for the prompt, 100 for 10 tokens


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


async def test_the_tenants_day_caps_grants_across_its_tasks(store: SqlTaskStore) -> None:
    day = today(tokens=1000)
    first, second, third = [await _task(store, 10_000) for _ in range(3)]
    assert await _reserve(store, first, "a", want=800, minimum=50, also=(day,)) == 800
    assert await _reserve(store, second, "b", want=500, minimum=50, also=(day,)) == 200
    with pytest.raises(BudgetExceeded, match="the tenant's daily budget has 0 of 1000 tokens"):
        await _reserve(store, third, "c", want=500, minimum=50, also=(day,))
    status = await store.day_budget("acme")
    assert (status.limit_tokens, status.used_tokens, status.reserved_tokens) == (1000, 0, 1000)
    other_tenant = await _task(store, 10_000, tenant="globex")
    globex = today("globex", tokens=1000)
    granted = await _reserve(
        store, other_tenant, "g", want=900, minimum=50, also=(globex,), tenant="globex"
    )
    assert granted == 900


async def test_settling_moves_tokens_from_reserved_to_used(store: SqlTaskStore) -> None:
    day = today(tokens=1000, usd=5000)
    task_id = await _task(store, 10_000)
    await _reserve(store, task_id, "a", want=500, minimum=50, also=(day,))
    await _reserve(store, task_id, "b", want=300, minimum=50, also=(day,))
    await store.record_llm_call("acme", task_id, _call("a", 200, 100, cost=42))
    await store.release("acme", task_id, "b")
    status = await store.day_budget("acme")
    assert (status.used_tokens, status.reserved_tokens) == (300, 0)
    assert (status.used_micro_usd, status.reserved_micro_usd) == (42, 0)
    task = await store.get_task("acme", task_id)
    assert task.usage.total_tokens == 300


async def test_crossing_the_alert_threshold_is_an_event_once(store: SqlTaskStore) -> None:
    day = today(tokens=1000, usd=100)
    task_id = await _task(store, 10_000)
    # tokens 500 → 750 → 850 (> 800); money 30 → 60 → 90 (> 80)
    for key, prompt in (("a", 500), ("b", 250), ("c", 100)):
        await _reserve(store, task_id, key, want=prompt, minimum=1, also=(day,))
        await store.record_llm_call("acme", task_id, _call(key, prompt - 40, 40, cost=30))
    alerts = [e for e in await store.events_after("acme", task_id, 0) if e.type == "budget.alert"]
    assert [(a.data["measure"], a.data["used"], a.data["limit"]) for a in alerts] == [
        ("tokens", 850, 1000),
        ("micro_usd", 90, 100),
    ]


async def test_a_used_up_day_refuses_new_tasks_until_midnight(store: SqlTaskStore) -> None:
    day = today(tokens=1000)
    task_id = await _task(store, 10_000, day=day)
    await _reserve(store, task_id, "a", want=1000, minimum=1, also=(day,))
    await store.record_llm_call("acme", task_id, _call("a", 900, 100))
    with pytest.raises(RateLimited) as refused:
        await _task(store, 10_000, day=day)
    assert refused.value.code == "budget_exhausted"
    assert 0 < refused.value.retry_after_s <= 86_400
    assert "resets at" in refused.value.message
    # Money runs out the same way.
    money_day = today("globex", usd=10)
    other = await _task(store, 10_000, tenant="globex", day=money_day)
    ask = Ask(prompt_tokens=10, answer_tokens=10, input_price=500_000, output_price=500_000)
    await store.reserve("globex", other, "g", budgets=[money_day], ask=ask)
    with pytest.raises(RateLimited, match="10 micro-dollars"):
        await _task(store, 10_000, tenant="globex", day=money_day)
