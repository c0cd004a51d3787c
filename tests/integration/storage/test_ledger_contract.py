"""One contract for every budget ledger: the database's (SQLite, PostgreSQL) and Redis's.

Each backend reserves a call against several budgets at once, all or none, in tokens
and micro-dollars; returns the first grant to a repeated key; settles or releases once;
and, hammered by 50 agents in 2 processes, never lets used tokens pass a limit, with
exactly the refusals the arithmetic says.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pytest
from redis.exceptions import ResponseError

from tests.servers import create_database, drop_database
from troupe.domain import Strategy
from troupe.errors import BudgetExceeded
from troupe.storage import database
from troupe.storage.kv.ledger import RedisBudgetLedger
from troupe.storage.ledger import Ask, Budget, Counter, Grant, Settled
from troupe.storage.repositories import NewTask, SqlTaskStore, day_counter

pytestmark = pytest.mark.integration


class Ledger(Protocol):
    async def reserve(
        self,
        tenant_id: str,
        task_id: str,
        call_key: str,
        *,
        budgets: Sequence[Budget],
        ask: Ask,
        stale_prefix: str | None = None,
    ) -> Grant: ...

    async def settle(
        self, tenant_id: str, task_id: str, call_key: str, *, tokens: int, micro_usd: int
    ) -> list[Settled]: ...

    async def release(self, tenant_id: str, task_id: str, call_key: str) -> None: ...

    async def counters(self, ids: Sequence[str]) -> dict[str, Counter]: ...


@dataclass
class Backend:
    ledger: Ledger
    url: str  # where a child process finds the same ledger
    namespace: str = "troupe"


TASKS = ("tsk_000000000000000000000001", "tsk_000000000000000000000002")


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "redis":
        namespace = f"test-{secrets.token_hex(4)}"
        url = request.getfixturevalue("redis_url")
        ledger = RedisBudgetLedger(url, namespace=namespace)
        yield Backend(ledger, url, namespace)
        await ledger.aclose()
        return
    server_url = ""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    else:
        server_url = request.getfixturevalue("postgres_url")
        url = await create_database(server_url)
    engine = database.create_engine(url)
    await database.upgrade(engine)
    store = SqlTaskStore(engine)
    for task_id in TASKS:
        await store.create_task(
            NewTask(
                id=task_id,
                tenant_id="acme",
                session_id=None,
                query="q",
                strategy=Strategy.SIMPLE,
                token_budget=10**9,
                workflow_id=f"task-{task_id}",
            )
        )
    yield Backend(store, url)
    await store.aclose()
    if server_url:
        await drop_database(url, server_url)


def _ask(want: int, minimum: int) -> Ask:
    """``want`` tokens in all, at least ``minimum``."""
    return Ask(prompt_tokens=minimum - 1, answer_tokens=want - minimum + 1)


async def test_all_budgets_or_none(backend: Backend) -> None:
    ledger = backend.ledger
    first, second = TASKS
    task = Budget(f"task:{first}", 10_000)
    node = Budget(f"node:{first}:n1", 300)
    session = Budget("session:acme:s1", 500)
    grant = await ledger.reserve(
        "acme", first, "a", budgets=[task, node, session], ask=_ask(800, 50)
    )
    assert grant.tokens == 300
    other = Budget(f"task:{second}", 10_000)
    grant = await ledger.reserve("acme", second, "b", budgets=[other, session], ask=_ask(800, 50))
    assert grant.tokens == 200
    with pytest.raises(BudgetExceeded, match="the session's budget has 0 of 500 tokens"):
        await ledger.reserve("acme", second, "c", budgets=[other, session], ask=_ask(100, 50))
    held = await ledger.counters([other.counter, session.counter, "task:nobody"])
    assert held[other.counter].reserved_tokens == 200  # nothing of the refused call
    assert held[session.counter].reserved_tokens == 500
    assert "task:nobody" not in held


async def test_a_repeated_key_gets_its_first_grant(backend: Backend) -> None:
    task = Budget(f"task:{TASKS[0]}", 1000)
    first = await backend.ledger.reserve("acme", TASKS[0], "k", budgets=[task], ask=_ask(300, 50))
    again = await backend.ledger.reserve("acme", TASKS[0], "k", budgets=[task], ask=_ask(900, 50))
    assert first == again
    assert (await backend.ledger.counters([task.counter]))[task.counter].reserved_tokens == 300


async def test_settle_and_release_happen_once(backend: Backend) -> None:
    ledger, task_id = backend.ledger, TASKS[0]
    day = Budget(day_counter("acme", datetime.now(UTC).date().isoformat()), 5000, 900)
    budgets = [Budget(f"task:{task_id}", 1000), day]
    await ledger.reserve("acme", task_id, "s", budgets=budgets, ask=_ask(300, 50))
    await ledger.reserve("acme", task_id, "r", budgets=budgets, ask=_ask(200, 50))
    settled = await ledger.settle("acme", task_id, "s", tokens=120, micro_usd=40)
    assert {s.counter: (s.used_tokens, s.used_micro_usd) for s in settled} == {
        f"task:{task_id}": (120, 40),
        day.counter: (120, 40),
    }
    assert next(s for s in settled if s.counter == day.counter).limit_micro_usd == 900
    assert await ledger.settle("acme", task_id, "s", tokens=120, micro_usd=40) == []
    await ledger.release("acme", task_id, "r")
    await ledger.release("acme", task_id, "r")
    counter = (await ledger.counters([day.counter]))[day.counter]
    assert (counter.used_tokens, counter.reserved_tokens, counter.used_micro_usd) == (120, 0, 40)


async def test_money_shortens_the_answer(backend: Backend) -> None:
    money = Budget(f"task:{TASKS[0]}", None, 1_000)
    ask = Ask(prompt_tokens=100, answer_tokens=500, input_price=2_000_000, output_price=10_000_000)
    grant = await backend.ledger.reserve("acme", TASKS[0], "m", budgets=[money], ask=ask)
    assert (grant.answer_tokens, grant.micro_usd) == (80, 1_000)
    with pytest.raises(BudgetExceeded, match="0 of 1000 micro-dollars"):
        await backend.ledger.reserve("acme", TASKS[0], "n", budgets=[money], ask=ask)


async def test_a_retry_releases_what_its_dead_attempts_held(backend: Backend) -> None:
    task = Budget(f"task:{TASKS[0]}", 1000)
    for key in ("run:act-1:1:0", "run:act-2:1:0"):
        await backend.ledger.reserve("acme", TASKS[0], key, budgets=[task], ask=_ask(400, 50))
    grant = await backend.ledger.reserve(
        "acme",
        TASKS[0],
        "run:act-1:2:0",
        budgets=[task],
        ask=_ask(500, 50),
        stale_prefix="run:act-1:",
    )
    assert grant.tokens == 500  # act-1's first attempt gave its 400 back; act-2 keeps its own
    assert (await backend.ledger.counters([task.counter]))[task.counter].reserved_tokens == 900


async def test_fifty_agents_in_two_processes_never_pass_the_limit(backend: Backend) -> None:
    budget, per_call, task_id = 2000, 100, TASKS[1]

    async def process(tag: str) -> dict[str, int]:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.storage.ledger_hammer",
            backend.url,
            task_id,
            "25",
            str(per_call),
            tag,
            str(budget),
            backend.namespace,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await child.communicate()
        assert child.returncode == 0, err.decode()
        result: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
        return result

    one, two = await asyncio.gather(process("one"), process("two"))
    assert one["settled"] + two["settled"] == budget // per_call  # 20 fit
    assert one["refused"] + two["refused"] == 50 - budget // per_call  # 30 are refused
    counter = (await backend.ledger.counters([f"task:{task_id}"]))[f"task:{task_id}"]
    assert (counter.used_tokens, counter.reserved_tokens) == (budget, 0)


async def test_concurrent_calls_of_one_process_each_get_their_own_answer(
    backend: Backend,
) -> None:
    """PostgreSQL and Redis send one process's concurrent calls together (one
    transaction, one pipeline); each call still gets the answer it would get alone, in
    the order the calls were made."""
    ledger, task_id = backend.ledger, TASKS[0]
    task = Budget(f"task:{task_id}", 1000)
    await ledger.reserve("acme", task_id, "held", budgets=[task], ask=_ask(100, 50))
    answers = await asyncio.gather(
        *(
            ledger.reserve("acme", task_id, f"k{n}", budgets=[task], ask=_ask(100 + n, 50))
            for n in range(7)
        ),
        ledger.reserve("acme", task_id, "big", budgets=[task], ask=_ask(900, 900)),
        ledger.settle("acme", task_id, "held", tokens=60, micro_usd=0),
        ledger.reserve("acme", task_id, "after", budgets=[task], ask=_ask(500, 50)),
        ledger.release("acme", task_id, "k0"),
        return_exceptions=True,
    )
    # 100 held + 100 + 101 + … + 106 = 821 of 1,000: the big call's 900 do not fit.
    assert [g.tokens for g in answers[:7] if isinstance(g, Grant)] == [100 + n for n in range(7)]
    assert isinstance(answers[7], BudgetExceeded)
    settled = answers[8]
    assert isinstance(settled, list)
    assert [s.used_tokens for s in settled] == [60]
    # The settle gave back 40: 1,000 - 60 - 721 = 219 is what the last reserve finds.
    assert isinstance(answers[9], Grant)
    assert answers[9].tokens == 219
    counter = (await ledger.counters([task.counter]))[task.counter]
    assert (counter.used_tokens, counter.reserved_tokens) == (60, 721 - 100 + 219)


async def test_redis_survives_lost_scripts(redis_url: str) -> None:
    """A server that lost the ledger's scripts (restarted, flushed) has them loaded
    again, and the calls of the turn that found them gone each get their own answer."""
    ledger = RedisBudgetLedger(redis_url, namespace=f"test-{secrets.token_hex(4)}")
    task = Budget(f"task:{TASKS[0]}", 1000)
    try:
        await ledger.reserve("acme", TASKS[0], "k0", budgets=[task], ask=_ask(100, 50))
        await ledger._redis.script_flush()
        refused, settled = await asyncio.gather(
            ledger.reserve("acme", TASKS[0], "big", budgets=[task], ask=_ask(950, 950)),
            ledger.settle("acme", TASKS[0], "k0", tokens=60, micro_usd=0),
            return_exceptions=True,
        )
        assert isinstance(refused, BudgetExceeded)  # one call's refusal is its own
        assert isinstance(settled, list)
        assert [s.used_tokens for s in settled] == [60]
        counter = (await ledger.counters([task.counter]))[task.counter]
        assert (counter.used_tokens, counter.reserved_tokens) == (60, 0)
    finally:
        await ledger.aclose()


async def test_redis_an_operation_that_fails_fails_alone(redis_url: str) -> None:
    """One script runs a whole batch; an operation that fails there (here a settle of
    a malformed amount, which the typed API cannot send) changes nothing and answers
    its own error, and the operations beside it take effect."""
    ledger = RedisBudgetLedger(redis_url, namespace=f"test-{secrets.token_hex(4)}")
    task = Budget(f"task:{TASKS[0]}", 1000)
    try:
        await ledger.reserve("acme", TASKS[0], "bad", budgets=[task], ask=_ask(100, 50))
        answers: list[object] = await asyncio.gather(
            ledger._batches.run(["s", "bad", TASKS[0], "not a number", 0]),
            ledger.reserve("acme", TASKS[0], "good", budgets=[task], ask=_ask(200, 50)),
            return_exceptions=True,
        )
        assert isinstance(answers[0], ResponseError)
        assert isinstance(answers[1], Grant)
        counter = (await ledger.counters([task.counter]))[task.counter]
        assert counter.reserved_tokens == 300  # the good grant, beside the one still held
    finally:
        await ledger.aclose()
