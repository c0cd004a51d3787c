"""The budget ledger alone: reserve + settle pairs against one hot set of budgets.

For each backend (SQLite, the embedded default; PostgreSQL 16 from ``pgserver``), a
fresh database gets one task. Then 2 processes of 25 asyncio clients each (50 clients)
loop for ``--seconds``: reserve ``PER_CALL`` tokens and their micro-dollars against the
same three budgets, the task's, its session's and its tenant's UTC day
(``SqlTaskStore.reserve``), then record a call that used exactly the grant
(``record_llm_call``, which settles), and time the pair with ``perf_counter``. A
refused reservation (the budget is spent) counts as refused and the client stops.
Meanwhile the parent reads the task every 100 ms and checks the invariant: used tokens
never above the budget. At the end: used == settled pairs × PER_CALL.

A pair here is the whole production path: the settle is the recording of the call
(usage row, task totals, tenant day, ``llm.call`` event), all on one hot task row.

Reported per backend: pairs per second (settled pairs / wall time of the run), pair
latency p50/p99, the invariant checks made and whether any failed. Targets (issue 5):
at least 2,000 pairs/s on PostgreSQL and SQLite; under 1 ms p50 added to each LLM call
(see ``llm_router.py`` for that one). Floors measured on this machine
(ARCHITECTURE.md, "Budget ledger cost"): PostgreSQL driven from the client ~230 pairs/s,
as one plpgsql function ~540 (~2,800 with ``synchronous_commit = off``); SQLite WAL
with ``BEGIN IMMEDIATE`` ~2,300 with a connection per client thread, ~9,500 with one
connection per process.

    .venv/bin/python benchmarks/budget_ledger.py [--seconds 10] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stats import PERCENTILE_METHOD, summarize

from troupe.domain import Strategy, Usage
from troupe.errors import BudgetExceeded
from troupe.storage import database
from troupe.storage.ledger import Ask, Budget
from troupe.storage.repositories import LLMCallRecord, NewTask, SqlTaskStore, day_counter

PER_CALL = 100
CLIENTS_PER_PROCESS = 25
PROCESSES = 2
TARGET_PAIRS_PER_S = 2000.0
TASK_ID = "tsk_00000000000000000ledger0"


def hot_budgets(budget: int) -> list[Budget]:
    """The three budgets every call draws on: the task's, its session's, the tenant's day."""
    today = time.strftime("%Y-%m-%d", time.gmtime())
    return [
        Budget(f"task:{TASK_ID}", budget, budget),
        Budget("session:bench:s1", budget, budget),
        Budget(day_counter("bench", today), budget, budget),
    ]


# Each call asks for PER_CALL tokens at 1 µ$ per token: 100 µ$ of money besides.
ASK = Ask(
    prompt_tokens=PER_CALL - 1, answer_tokens=1, input_price=1_000_000, output_price=1_000_000
)


async def client_process(url: str, seconds: float, tag: str, budget: int) -> dict[str, Any]:
    """One process's clients; returns pair latencies (ms) and counts."""
    store = SqlTaskStore(database.create_engine(url, pool_size=CLIENTS_PER_PROCESS))
    budgets = hot_budgets(budget)
    latencies: list[float] = []
    refused = 0
    deadline = time.monotonic() + seconds

    async def client(n: int) -> None:
        nonlocal refused
        i = 0
        while time.monotonic() < deadline:
            key = f"{tag}-{n}-{i}"
            i += 1
            started = time.perf_counter()
            try:
                grant = await store.reserve("bench", TASK_ID, key, budgets=budgets, ask=ASK)
            except BudgetExceeded:
                refused += 1
                return
            usage = Usage(
                prompt_tokens=grant.tokens - 10,
                completion_tokens=10,
                cost_micro_usd=grant.micro_usd,
            )
            call = LLMCallRecord(
                call_key=key,
                provider="bench",
                model="bench",
                usage=usage,
                cached_tokens=0,
                latency_ms=0,
            )
            await store.record_llm_call("bench", TASK_ID, call)
            latencies.append((time.perf_counter() - started) * 1000)

    try:
        await asyncio.gather(*(client(n) for n in range(CLIENTS_PER_PROCESS)))
    finally:
        await store.aclose()
    return {"latencies": latencies, "refused": refused}


async def run_backend(url: str, seconds: float, budget: int) -> dict[str, Any]:
    engine = database.create_engine(url)
    await database.upgrade(engine)
    store = SqlTaskStore(engine)
    await store.create_task(
        NewTask(
            id=TASK_ID,
            tenant_id="bench",
            session_id=None,
            query="ledger benchmark",
            strategy=Strategy.SIMPLE,
            token_budget=budget,
            workflow_id="bench",
        )
    )
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--child",
            url,
            str(seconds),
            f"p{n}",
            str(budget),
            stdout=asyncio.subprocess.PIPE,
        )
        for n in range(PROCESSES)
    ]
    started = time.perf_counter()
    checks = violations = 0
    outputs = asyncio.gather(*(child.communicate() for child in children))
    while not outputs.done():
        task = await store.get_task("bench", TASK_ID)
        checks += 1
        violations += task.usage.total_tokens > budget
        await asyncio.sleep(0.1)
    results = [json.loads(out.decode()) for out, _ in await outputs]
    wall = time.perf_counter() - started
    task = await store.get_task("bench", TASK_ID)
    await store.aclose()
    latencies = [ms for r in results for ms in r["latencies"]]
    return {
        "pairs": len(latencies),
        "refused": sum(r["refused"] for r in results),
        "wall_s": wall,
        "pairs_per_s": len(latencies) / wall,
        "pair_ms": summarize(latencies),
        "budget": budget,
        "used": task.usage.total_tokens,
        "invariant_checks": checks,
        "invariant_violations": violations
        + (task.usage.total_tokens > budget)
        + (task.usage.total_tokens != len(latencies) * PER_CALL),
    }


async def main(seconds: float, backends: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        budget = 2_000_000_000  # large: the run measures throughput, not exhaustion
        if "sqlite" in backends:
            url = f"sqlite+aiosqlite:///{Path(scratch) / 'ledger.db'}"
            results["sqlite"] = await run_backend(url, seconds, budget)
        if "postgresql" in backends:
            import pgserver  # dev dependency: a real PostgreSQL 16

            server = pgserver.get_server(str(Path(scratch) / "pg"), cleanup_mode="stop")
            try:
                uri = server.get_uri().replace(
                    "postgresql://postgres:@", "postgresql+asyncpg://postgres@", 1
                )
                results["postgresql"] = await run_backend(uri, seconds, budget)
            finally:
                server.cleanup()
    return {
        "benchmark": "budget_ledger",
        "percentile_method": PERCENTILE_METHOD,
        "clients": PROCESSES * CLIENTS_PER_PROCESS,
        "processes": PROCESSES,
        "seconds": seconds,
        "target_pairs_per_s": TARGET_PAIRS_PER_S,
        "backends": results,
    }


def _print(result: dict[str, Any]) -> None:
    print(
        f"{result['clients']} clients in {result['processes']} processes, "
        f"{result['seconds']:g} s per backend"
    )
    for name, r in result["backends"].items():
        ms = r["pair_ms"] or {"median": float("nan"), "p99": float("nan")}
        verdict = "met" if r["pairs_per_s"] >= TARGET_PAIRS_PER_S else "MISSED"
        print(
            f"{name:10} {r['pairs_per_s']:8.0f} pairs/s (target >= {TARGET_PAIRS_PER_S:.0f}: "
            f"{verdict}); pair p50 {ms['median']:.2f} ms, p99 {ms['p99']:.2f} ms; "
            f"invariant checked {r['invariant_checks']} times, "
            f"{r['invariant_violations']} violations; used {r['used']} tokens"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        out = asyncio.run(
            client_process(sys.argv[2], float(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
        )
        sys.stdout.write(json.dumps(out))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    outcome = asyncio.run(main(args.seconds, args.backends.split(",")))
    if args.json:
        print(json.dumps(outcome, indent=2))
    else:
        _print(outcome)
