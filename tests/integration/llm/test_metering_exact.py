"""Metering is exact: over 1,000 routed calls (with rate limits, retries, fallback and
cache hits along the way) the stored usage sums equal what the providers reported."""

from __future__ import annotations

import random

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from troupe.agents.metering import CallContext, MeteredLLM
from troupe.config import LLMSettings, SimulationSettings
from troupe.domain import Strategy, TaskBudgets
from troupe.llm.base import LLMProvider, TextSink
from troupe.llm.cache import MemoryPromptCache
from troupe.llm.messages import ChatMessage, ChatRequest, ChatResponse
from troupe.llm.providers.simulation import SimulationProvider
from troupe.llm.router import LLMRouter
from troupe.orchestrator.launcher import new_task_id
from troupe.storage.repositories import NewTask, SqlTaskStore

pytestmark = pytest.mark.integration

CALLS = 1000


class Tally:
    """Wraps a provider and adds up the usage of every answer it gives."""

    def __init__(self, inner: LLMProvider) -> None:
        self._inner = inner
        self.name = inner.name
        self.prompt = 0
        self.completion = 0
        self.answers = 0

    async def complete(
        self, request: ChatRequest, *, on_text: TextSink | None = None
    ) -> ChatResponse:
        response = await self._inner.complete(request, on_text=on_text)
        self.prompt += response.usage.prompt_tokens
        self.completion += response.usage.completion_tokens
        self.answers += 1
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_stored_usage_equals_provider_reported_usage(migrated_engine: AsyncEngine) -> None:
    settings = LLMSettings.model_validate(
        {
            "providers": {"flaky": {"kind": "simulation"}, "steady": {"kind": "simulation"}},
            "tiers": {
                tier: [
                    {"provider": "flaky", "model": "sim-small", "priority": 1},
                    {"provider": "steady", "model": "sim-large", "priority": 2},
                ]
                for tier in ("small", "medium", "large")
            },
            "retry": {"attempts": 2, "initial_backoff_ms": 0, "max_backoff_ms": 0},
            "breaker": {"failure_threshold": 1000, "window_s": 60, "cooldown_s": 1},
        }
    )
    flaky = Tally(SimulationProvider(SimulationSettings(rate_limit_rate=0.3, seed=3), name="flaky"))
    steady = Tally(SimulationProvider(SimulationSettings(), name="steady"))
    router = LLMRouter({"flaky": flaky, "steady": steady}, settings, rng=random.Random(5))
    store = SqlTaskStore(migrated_engine)
    llm = MeteredLLM(router, settings, store, MemoryPromptCache(ttl_s=600, max_entries=100))
    task_id = new_task_id()
    await store.create_task(
        NewTask(
            id=task_id,
            tenant_id="acme",
            session_id=None,
            query="metering",
            strategy=Strategy.SIMPLE,
            token_budget=10**9,
            workflow_id=f"task-{task_id}",
        )
    )
    ctx = CallContext(
        tenant_id="acme",
        task_id=task_id,
        budgets=TaskBudgets(task_tokens=10**9),
        attempt_key="a:1",
    )
    prompts = random.Random(11)
    hits = 0
    for index in range(CALLS):
        # 600 possible questions over 1,000 calls: some repeat, so the cache answers some.
        question = f"question {prompts.randrange(600)}: weigh the options"
        metered = await llm.call(
            ctx,
            (ChatMessage(role="user", content=question),),
            tier="medium",
            index=index,
        )
        hits += metered.record.cache_hit
        assert await store.record_llm_call("acme", task_id, metered.record)

    stored = await store.usage_calls("acme", task_id)
    task = await store.get_task("acme", task_id)
    await store.aclose()
    assert len(stored) == CALLS
    assert sum(c.cache_hit for c in stored) == hits
    assert hits + flaky.answers + steady.answers == CALLS
    assert flaky.answers > 0
    assert steady.answers > 0  # rate limits on both tries sent some calls on
    reported_prompt = flaky.prompt + steady.prompt
    reported_completion = flaky.completion + steady.completion
    assert sum(c.usage.prompt_tokens for c in stored) == reported_prompt
    assert sum(c.usage.completion_tokens for c in stored) == reported_completion
    assert task.usage.prompt_tokens == reported_prompt
    assert task.usage.completion_tokens == reported_completion
    assert task.usage.cost_micro_usd == sum(c.usage.cost_micro_usd for c in stored)
