"""What the LLM layer adds to a model call: routing, metering and the prompt cache.

In one process, on uvloop, calls are made one at a time and each is timed with
``perf_counter``; CPU per call is ``process_time`` over a case's loop divided by its
calls (this process only). Cases:

- ``sim-raw``: ``SimulationProvider.complete`` at zero latency, nothing around it;
- ``sim-routed``: ``MeteredLLM.call`` (request, cache lookup and store, router with
  breaker and retry wrapper, cost, call record) over the same provider, every prompt
  new (cache misses), with a ledger that grants at once (``UnlimitedLedger``): what
  issue 4's target is about;
- ``sim-routed-ledger``: the same with the embedded SQLite ledger, where every call
  reserves its tokens in a write transaction, as in production (the budget's cost,
  issue 5's "under 1 ms p50 added to each LLM call");
- ``sim-cache-hit``: ``MeteredLLM.call`` with a prompt the cache holds;
- ``sim-fallback``: ``MeteredLLM.call`` whose first candidate fails at once (a
  simulation provider with ``failure_rate`` 1, one try) and whose second answers;
- ``openai-raw``: the official ``openai`` client against a loopback stub server
  (``openai_stub.py``, its own process) answering a recorded chat completion;
- ``openai-routed``: ``MeteredLLM.call`` through ``OpenAIProvider`` to the same stub,
  every prompt new, streaming off (like the raw case);
- ``openai-stream-raw`` / ``openai-stream-routed``: the same pair with streaming (the
  SDK's ``chat.completions.stream`` helper; the routed call also times the first token).

The openai cases alternate in blocks of 100 so that drift hits both alike. Overheads
are differences of percentiles (routed minus raw), and of CPU per call. Targets
(issue 4): routing + metering + cache lookup under 1 ms p99 above the raw client; a
fallback under 2 ms plus the failed call; a cache hit under 0.3 ms. Anchors measured on
this machine: LiteLLM's Router adds ~7.8 ms CPU per call over the raw client (its plain
``acompletion`` ~4.4 ms), a fallback ~25 ms, a cache hit 0.7–2.2 ms.

    .venv/bin/python benchmarks/llm_router.py [--calls 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import uvloop
from pydantic import SecretStr
from stats import PERCENTILE_METHOD, summarize

from troupe.agents.metering import BudgetLedger, CallContext, MeteredLLM
from troupe.config import LLMSettings, SimulationSettings
from troupe.domain import Strategy, TaskBudgets
from troupe.llm.cache import MemoryPromptCache
from troupe.llm.messages import ChatMessage, ChatRequest
from troupe.llm.providers.openai import OpenAIProvider
from troupe.llm.providers.simulation import SimulationProvider
from troupe.llm.router import LLMRouter
from troupe.orchestrator.devserver import free_port
from troupe.storage import database
from troupe.storage.repositories import NewTask, SqlTaskStore
from troupe.testing import UnlimitedLedger

TARGET_OVERHEAD_P99_MS = 1.0
TARGET_FALLBACK_MS = 2.0
TARGET_CACHE_HIT_MS = 0.3
ANCHORS = (
    "LiteLLM Router: ~7.8 ms CPU per call over the raw client (plain acompletion ~4.4 ms); "
    "a fallback ~25 ms; a cache hit 0.7-2.2 ms"
)

Call = Callable[[int], Awaitable[Any]]


def _messages(i: int) -> tuple[ChatMessage, ...]:
    return (
        ChatMessage(role="system", content="You are a concise analyst."),
        ChatMessage(role="user", content=f"Question {i}: weigh event sourcing against CRUD."),
    )


def _settings(**changes: Any) -> LLMSettings:
    base: dict[str, Any] = {
        "retry": {"attempts": 1, "initial_backoff_ms": 0, "max_backoff_ms": 0},
        "breaker": {"failure_threshold": 10**9, "window_s": 60, "cooldown_s": 1},
        "pricing": {
            "sim-small": {"input": 150000, "output": 600000},
            "sim-large": {"input": 2500000, "output": 10000000},
            "gpt-4.1-mini": {"input": 400000, "output": 1600000},
        },
    }
    return LLMSettings.model_validate({**base, **changes})


TASK_ID = "tsk_000000000000000000bench00"


def _ctx() -> CallContext:
    return CallContext(
        tenant_id="bench",
        task_id=TASK_ID,
        budgets=TaskBudgets(task_tokens=2_000_000_000),
        attempt_key="run:1:1",
    )


async def _ledger(directory: Path) -> SqlTaskStore:
    """The embedded default ledger (SQLite) with one task whose budget never runs out:
    every routed call reserves its tokens there first, as in production."""
    engine = database.create_engine(f"sqlite+aiosqlite:///{directory / 'bench.db'}")
    await database.upgrade(engine)
    store = SqlTaskStore(engine)
    await store.create_task(
        NewTask(
            id=TASK_ID,
            tenant_id="bench",
            session_id=None,
            query="benchmark",
            strategy=Strategy.SIMPLE,
            token_budget=2_000_000_000,
            workflow_id="bench",
        )
    )
    return store


async def _measure(call: Call, indices: range) -> tuple[list[float], float]:
    """Per-call wall times (ms) and the CPU seconds the loop took."""
    times: list[float] = []
    cpu = time.process_time()
    for i in indices:
        started = time.perf_counter()
        await call(i)
        times.append((time.perf_counter() - started) * 1000)
    return times, time.process_time() - cpu


def _case(name: str, times: list[float], cpu_s: float) -> dict[str, Any]:
    return {
        "case": name,
        "calls": len(times),
        "ms": summarize(times),
        "cpu_ms_per_call": cpu_s * 1000 / len(times),
    }


async def simulation_cases(calls: int, ledger: SqlTaskStore) -> list[dict[str, Any]]:
    sim = SimulationProvider(SimulationSettings())
    ctx = _ctx()

    def metered(with_ledger: BudgetLedger) -> MeteredLLM:
        return MeteredLLM(
            LLMRouter({"simulation": sim}, _settings()),
            _settings(),
            with_ledger,
            MemoryPromptCache(ttl_s=3600, max_entries=100_000),
        )

    routed, budgeted = metered(UnlimitedLedger()), metered(ledger)
    fallback_settings = _settings(
        providers={"broken": {"kind": "simulation"}, "simulation": {"kind": "simulation"}},
        tiers={
            t: [
                {"provider": "broken", "model": "sim-small", "priority": 1},
                {"provider": "simulation", "model": "sim-small", "priority": 2},
            ]
            for t in ("small", "medium", "large")
        },
    )
    broken = SimulationProvider(SimulationSettings(failure_rate=1.0), name="broken")
    fallback = MeteredLLM(
        LLMRouter({"broken": broken, "simulation": sim}, fallback_settings),
        fallback_settings,
        UnlimitedLedger(),
        None,
    )

    async def raw(i: int) -> Any:
        request = ChatRequest(model="sim-small", messages=_messages(i), max_tokens=512)
        return await sim.complete(request)

    async def through(i: int) -> Any:
        return await routed.call(ctx, _messages(i), tier="medium", index=i)

    async def through_ledger(i: int) -> Any:
        return await budgeted.call(ctx, _messages(i), tier="medium", index=i)

    async def hit(i: int) -> Any:
        return await routed.call(ctx, _messages(-1), tier="medium", index=i)

    async def fell_back(i: int) -> Any:
        return await fallback.call(ctx, _messages(i), tier="medium", index=i)

    await hit(0)  # the cache now holds prompt -1
    for warm in (raw, through, through_ledger, fell_back):
        await _measure(warm, range(-200, 0))  # untimed warm-up
    results = []
    for name, call, offset in (
        ("sim-raw", raw, 0),
        ("sim-routed", through, 10**6),
        ("sim-routed-ledger", through_ledger, 3 * 10**6),
        ("sim-cache-hit", hit, 0),
        ("sim-fallback", fell_back, 2 * 10**6),
    ):
        times, cpu = await _measure(call, range(offset, offset + calls))
        results.append(_case(name, times, cpu))
    return results


async def openai_cases(calls: int, base_url: str) -> list[dict[str, Any]]:
    raw_client = openai.AsyncOpenAI(
        api_key="sk-bench",
        base_url=base_url,
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(trust_env=False),
    )
    provider = OpenAIProvider(
        "openai", api_key=SecretStr("sk-bench"), base_url=base_url, timeout_s=10
    )

    def metered(stream: bool) -> MeteredLLM:
        settings = _settings(
            providers={"openai": {"kind": "openai", "base_url": base_url, "stream": stream}},
            tiers={
                t: [{"provider": "openai", "model": "gpt-4.1-mini"}]
                for t in ("small", "medium", "large")
            },
        )
        return MeteredLLM(
            LLMRouter({"openai": provider}, settings),
            settings,
            UnlimitedLedger(),
            MemoryPromptCache(ttl_s=3600, max_entries=100_000),
        )

    plain, streaming = metered(stream=False), metered(stream=True)
    ctx = _ctx()

    def wire(i: int) -> list[Any]:
        return [{"role": m.role, "content": m.content} for m in _messages(i)]

    async def raw(i: int) -> Any:
        completion = await raw_client.chat.completions.create(
            model="gpt-4.1-mini", messages=wire(i), max_completion_tokens=512, temperature=0.0
        )
        return completion.choices[0].message.content

    async def raw_stream(i: int) -> Any:
        async with raw_client.chat.completions.stream(
            model="gpt-4.1-mini",
            messages=wire(i),
            max_completion_tokens=512,
            temperature=0.0,
            stream_options={"include_usage": True},
        ) as stream:
            async for _ in stream:
                pass
            return await stream.get_final_completion()

    async def through(i: int) -> Any:
        return await plain.call(ctx, _messages(i), tier="medium", index=i)

    async def through_stream(i: int) -> Any:
        return await streaming.call(ctx, _messages(i), tier="medium", index=i)

    pairs: tuple[tuple[str, Call, int], ...] = (
        ("openai-raw", raw, 0),
        ("openai-routed", through, 10**6),
        ("openai-stream-raw", raw_stream, 2 * 10**6),
        ("openai-stream-routed", through_stream, 3 * 10**6),
    )
    for _, warm, _ in pairs:
        await _measure(warm, range(-300, 0))
    samples: dict[str, list[float]] = {name: [] for name, _, _ in pairs}
    cpu: dict[str, float] = dict.fromkeys(samples, 0.0)
    block = 100
    for start in range(0, calls, block):
        for name, call, offset in pairs:
            size = min(block, calls - start)
            times, spent = await _measure(call, range(offset + start, offset + start + size))
            samples[name] += times
            cpu[name] += spent
    await raw_client.close()
    await provider.aclose()
    return [_case(name, samples[name], cpu[name]) for name in samples]


def _stub(port: int) -> subprocess.Popen[bytes]:
    stub = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("openai_stub.py")), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 15
    with httpx.Client(trust_env=False) as http:
        while time.monotonic() < deadline:
            try:
                http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={})
                return stub
            except httpx.TransportError:
                time.sleep(0.05)
    stub.kill()
    raise SystemExit("the OpenAI stub server did not start")


def _diff(a: dict[str, Any], b: dict[str, Any], key: str) -> float:
    value: float = a["ms"][key] - b["ms"][key]
    return value


def report(cases: list[dict[str, Any]]) -> dict[str, Any]:
    by = {c["case"]: c for c in cases}
    sim_over = {
        "p50_ms": _diff(by["sim-routed"], by["sim-raw"], "median"),
        "p99_ms": _diff(by["sim-routed"], by["sim-raw"], "p99"),
        "cpu_ms": by["sim-routed"]["cpu_ms_per_call"] - by["sim-raw"]["cpu_ms_per_call"],
    }
    http_over = {
        "p50_ms": _diff(by["openai-routed"], by["openai-raw"], "median"),
        "p99_ms": _diff(by["openai-routed"], by["openai-raw"], "p99"),
        "cpu_ms": by["openai-routed"]["cpu_ms_per_call"] - by["openai-raw"]["cpu_ms_per_call"],
    }
    stream_over = {
        "p50_ms": _diff(by["openai-stream-routed"], by["openai-stream-raw"], "median"),
        "p99_ms": _diff(by["openai-stream-routed"], by["openai-stream-raw"], "p99"),
        "cpu_ms": by["openai-stream-routed"]["cpu_ms_per_call"]
        - by["openai-stream-raw"]["cpu_ms_per_call"],
    }
    ledger_cost = {
        "p50_ms": _diff(by["sim-routed-ledger"], by["sim-routed"], "median"),
        "p99_ms": _diff(by["sim-routed-ledger"], by["sim-routed"], "p99"),
        "cpu_ms": by["sim-routed-ledger"]["cpu_ms_per_call"] - by["sim-routed"]["cpu_ms_per_call"],
    }
    fallback_extra = {
        "p50_ms": _diff(by["sim-fallback"], by["sim-routed"], "median"),
        "p99_ms": _diff(by["sim-fallback"], by["sim-routed"], "p99"),
    }
    hit = by["sim-cache-hit"]["ms"]
    return {
        "benchmark": "llm_router",
        "percentile_method": PERCENTILE_METHOD,
        "cases": cases,
        "overhead_simulation": sim_over,
        "overhead_openai_loopback": http_over,
        "overhead_openai_loopback_streaming": stream_over,
        "fallback_extra_over_routed": fallback_extra,
        "ledger_reservation": ledger_cost,
        "cache_hit_ms": {"p50": hit["median"], "p99": hit["p99"]},
        "targets": {
            "overhead_p99_ms": TARGET_OVERHEAD_P99_MS,
            "fallback_ms": TARGET_FALLBACK_MS,
            "cache_hit_ms": TARGET_CACHE_HIT_MS,
        },
        "meets": {
            "overhead_openai_p99": http_over["p99_ms"] < TARGET_OVERHEAD_P99_MS,
            "overhead_simulation_p99": sim_over["p99_ms"] < TARGET_OVERHEAD_P99_MS,
            "fallback_p99": fallback_extra["p99_ms"] < TARGET_FALLBACK_MS,
            "cache_hit_p99": hit["p99"] < TARGET_CACHE_HIT_MS,
        },
        "anchors": ANCHORS,
    }


def _print(result: dict[str, Any]) -> None:
    print(f"{'case':20} {'calls':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'CPU ms/call':>12}")
    for case in result["cases"]:
        ms = case["ms"]
        print(
            f"{case['case']:20} {case['calls']:6d} {ms['median']:8.3f} {ms['p90']:8.3f} "
            f"{ms['p99']:8.3f} {case['cpu_ms_per_call']:12.3f}"
        )
    sim, http, streamed, fb, hit = (
        result["overhead_simulation"],
        result["overhead_openai_loopback"],
        result["overhead_openai_loopback_streaming"],
        result["fallback_extra_over_routed"],
        result["cache_hit_ms"],
    )
    meets = result["meets"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print(
        f"overhead over the raw openai client: p50 {http['p50_ms']:+.3f} ms, "
        f"p99 {http['p99_ms']:+.3f} ms, CPU {http['cpu_ms']:+.3f} ms/call "
        f"(target p99 < {TARGET_OVERHEAD_P99_MS} ms: {verdict(meets['overhead_openai_p99'])})"
    )
    print(
        f"streaming, over the raw streaming client: p50 {streamed['p50_ms']:+.3f} ms, "
        f"p99 {streamed['p99_ms']:+.3f} ms, CPU {streamed['cpu_ms']:+.3f} ms/call"
    )
    print(
        f"overhead over the raw simulation:    p50 {sim['p50_ms']:+.3f} ms, "
        f"p99 {sim['p99_ms']:+.3f} ms, CPU {sim['cpu_ms']:+.3f} ms/call "
        f"(target p99 < {TARGET_OVERHEAD_P99_MS} ms: {verdict(meets['overhead_simulation_p99'])})"
    )
    print(
        f"a fallback adds (over a routed call): p50 {fb['p50_ms']:+.3f} ms, "
        f"p99 {fb['p99_ms']:+.3f} ms (target < {TARGET_FALLBACK_MS} ms plus the failed "
        f"call: {verdict(meets['fallback_p99'])})"
    )
    print(
        f"a cache hit: p50 {hit['p50']:.3f} ms, p99 {hit['p99']:.3f} ms "
        f"(target < {TARGET_CACHE_HIT_MS} ms: {verdict(meets['cache_hit_p99'])})"
    )
    ledger = result["ledger_reservation"]
    print(
        f"the SQLite ledger's reservation adds: p50 {ledger['p50_ms']:+.3f} ms, "
        f"p99 {ledger['p99_ms']:+.3f} ms, CPU {ledger['cpu_ms']:+.3f} ms/call "
        f"(issue 5: under 1 ms p50)"
    )
    print(f"anchors: {ANCHORS}")


async def main(calls: int) -> dict[str, Any]:
    port = free_port()
    stub = _stub(port)
    with tempfile.TemporaryDirectory() as scratch:
        ledger = await _ledger(Path(scratch))
        try:
            cases = await simulation_cases(calls, ledger)
            cases += await openai_cases(calls, f"http://127.0.0.1:{port}/v1")
        finally:
            stub.terminate()
            stub.wait(10)
            await ledger.aclose()
    return report(cases)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per case")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    result = uvloop.run(main(args.calls))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
