"""One process of agents hammering a task's budget, for the two-process ledger test.

    python -m tests.integration.storage.ledger_hammer DATABASE_URL TASK_ID AGENTS PER_CALL

Each agent reserves PER_CALL tokens (all or nothing), yields, then records a call that
used exactly its grant. Prints one JSON line: {"settled": n, "refused": m}.
"""

from __future__ import annotations

import asyncio
import json
import sys

from troupe.domain import Usage
from troupe.errors import BudgetExceeded
from troupe.storage import database
from troupe.storage.repositories import LLMCallRecord, SqlTaskStore


async def hammer(url: str, task_id: str, agents: int, per_call: int, tag: str) -> dict[str, int]:
    store = SqlTaskStore(database.create_engine(url, pool_size=agents))
    outcomes = {"settled": 0, "refused": 0}

    async def agent(n: int) -> None:
        key = f"{tag}-{n}"
        try:
            grant = await store.reserve_tokens(
                "acme", task_id, key, want=per_call, minimum=per_call
            )
        except BudgetExceeded:
            outcomes["refused"] += 1
            return
        await asyncio.sleep(0.001)  # hold it a moment, as a call would
        usage = Usage(prompt_tokens=grant - 10, completion_tokens=10, cost_micro_usd=1)
        call = LLMCallRecord(
            call_key=key,
            provider="simulation",
            model="sim-small",
            usage=usage,
            cached_tokens=0,
            latency_ms=1,
        )
        await store.record_llm_call("acme", task_id, call)
        outcomes["settled"] += 1

    try:
        await asyncio.gather(*(agent(n) for n in range(agents)))
    finally:
        await store.aclose()
    return outcomes


if __name__ == "__main__":
    url, task_id, agents, per_call = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    tag = sys.argv[5] if len(sys.argv) > 5 else "p"
    sys.stdout.write(json.dumps(asyncio.run(hammer(url, task_id, agents, per_call, tag))) + "\n")
