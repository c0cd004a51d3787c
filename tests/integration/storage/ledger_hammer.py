"""One process of agents hammering one set of budgets, for the two-process ledger tests.

    python -m tests.integration.storage.ledger_hammer URL TASK_ID AGENTS PER_CALL TAG \
        BUDGET [NAMESPACE]

URL is a database (the store's ledger) or ``redis://`` (the Redis ledger, keys under
NAMESPACE). Each agent reserves PER_CALL tokens (all or nothing) against the task's
BUDGET and the tenant's day, yields, then settles what it used, exactly its grant: on a
database by recording the call (as production does), on Redis by the ledger's settle.
Prints one JSON line: {"settled": n, "refused": m}.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime

from troupe.domain import Usage
from troupe.errors import BudgetExceeded
from troupe.storage import database
from troupe.storage.kv.ledger import RedisBudgetLedger
from troupe.storage.ledger import Ask, Budget
from troupe.storage.repositories import LLMCallRecord, SqlTaskStore, day_counter


async def hammer(
    url: str, task_id: str, agents: int, per_call: int, tag: str, budget: int, namespace: str
) -> dict[str, int]:
    redis = url.startswith("redis://")
    ledger = (
        RedisBudgetLedger(url, namespace=namespace)
        if redis
        else SqlTaskStore(database.create_engine(url, pool_size=agents))
    )
    day = day_counter("acme", datetime.now(UTC).date().isoformat())
    budgets = [Budget(f"task:{task_id}", budget), Budget(day)]
    ask = Ask(prompt_tokens=per_call - 1, answer_tokens=1)
    outcomes = {"settled": 0, "refused": 0}

    async def agent(n: int) -> None:
        key = f"{tag}-{n}"
        try:
            grant = await ledger.reserve("acme", task_id, key, budgets=budgets, ask=ask)
        except BudgetExceeded:
            outcomes["refused"] += 1
            return
        await asyncio.sleep(0.001)  # hold it a moment, as a call would
        if isinstance(ledger, SqlTaskStore):
            usage = Usage(prompt_tokens=grant.tokens - 10, completion_tokens=10, cost_micro_usd=1)
            call = LLMCallRecord(
                call_key=key,
                provider="simulation",
                model="sim-small",
                usage=usage,
                cached_tokens=0,
                latency_ms=1,
            )
            await ledger.record_llm_call("acme", task_id, call)
        else:
            await ledger.settle("acme", task_id, key, tokens=grant.tokens, micro_usd=1)
        outcomes["settled"] += 1

    try:
        await asyncio.gather(*(agent(n) for n in range(agents)))
    finally:
        await ledger.aclose()
    return outcomes


if __name__ == "__main__":
    url, task_id, agents, per_call = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    tag, budget = sys.argv[5], int(sys.argv[6])
    namespace = sys.argv[7] if len(sys.argv) > 7 else "troupe"
    outcome = asyncio.run(hammer(url, task_id, agents, per_call, tag, budget, namespace))
    sys.stdout.write(json.dumps(outcome) + "\n")
