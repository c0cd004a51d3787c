"""The prompt cache's key and how MeteredLLM uses the cache."""

from __future__ import annotations

from troupe.agents.metering import CallContext, MeteredLLM
from troupe.config import LLMSettings
from troupe.domain import TaskBudgets
from troupe.llm.cache import MemoryPromptCache, cache_key
from troupe.llm.messages import ChatMessage, ChatRequest, StructuredOutput
from troupe.testing import FunctionProvider, UnlimitedLedger, routed

QUESTION = (ChatMessage(role="user", content="what is 2+2?"),)


def _request(**changes: object) -> ChatRequest:
    fields: dict[str, object] = {"model": "sim-small", "messages": QUESTION, "max_tokens": 100}
    return ChatRequest.model_validate({**fields, **changes})


def test_equal_requests_share_a_key_and_any_difference_changes_it() -> None:
    base = cache_key(_request())
    assert cache_key(_request()) == base
    variants = [
        _request(model="sim-large"),
        _request(max_tokens=101),
        _request(temperature=0.5),
        _request(messages=(ChatMessage(role="user", content="what is 2+3?"),)),
        _request(messages=(ChatMessage(role="system", content="what is 2+2?"),)),
        _request(response_format=StructuredOutput(name="a", json_schema={"type": "object"})),
    ]
    keys = {cache_key(v) for v in variants}
    assert base not in keys
    assert len(keys) == len(variants)


def _ctx(tenant: str = "acme", *, attempt: str = "run:1:1", use_cache: bool = True) -> CallContext:
    return CallContext(
        tenant_id=tenant,
        task_id="tsk_1",
        budgets=TaskBudgets(task_tokens=10_000),
        attempt_key=attempt,
        use_cache=use_cache,
    )


async def _four(request: ChatRequest) -> str:
    return "four"


def _metered() -> tuple[MeteredLLM, FunctionProvider]:
    provider = FunctionProvider(_four)
    cache = MemoryPromptCache(ttl_s=60, max_entries=10)
    return MeteredLLM(routed(provider), LLMSettings(), UnlimitedLedger(), cache), provider


async def test_a_repeated_call_is_answered_by_the_cache_at_zero_cost() -> None:
    llm, provider = _metered()
    first = await llm.call(_ctx(attempt="a:1"), QUESTION, tier="small")
    second = await llm.call(_ctx(attempt="b:1"), QUESTION, tier="small")
    assert len(provider.requests) == 1
    assert second.response.content == first.response.content
    assert not first.record.cache_hit
    assert first.record.usage.total_tokens > 0
    assert second.record.cache_hit
    assert second.record.usage.total_tokens == 0
    assert second.record.usage.cost_micro_usd == 0
    assert second.record.call_key != first.record.call_key


async def test_another_tenant_does_not_get_the_cached_answer() -> None:
    llm, provider = _metered()
    await llm.call(_ctx("acme"), QUESTION, tier="small")
    other = await llm.call(_ctx("globex"), QUESTION, tier="small")
    assert len(provider.requests) == 2
    assert not other.record.cache_hit


async def test_a_task_that_opts_out_always_calls_the_provider() -> None:
    llm, provider = _metered()
    await llm.call(_ctx(use_cache=False), QUESTION, tier="small")
    again = await llm.call(_ctx(use_cache=False), QUESTION, tier="small")
    assert len(provider.requests) == 2
    assert not again.record.cache_hit
