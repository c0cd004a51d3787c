"""The simulation provider is deterministic, honours max_tokens, and fails on request."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from troupe.config import ModelPrice, SimulationSettings
from troupe.errors import ConfigError, ProviderError
from troupe.llm.messages import ChatMessage, ChatRequest, TokenUsage
from troupe.llm.pricing import cost_micro_usd, estimate_prompt_tokens, price_for
from troupe.llm.providers.simulation import SimulationProvider

pytestmark = pytest.mark.unit


def _request(question: str, max_tokens: int = 256) -> ChatRequest:
    return ChatRequest(
        model="sim-small",
        messages=(ChatMessage(role="user", content=question),),
        max_tokens=max_tokens,
    )


async def test_same_request_same_answer_and_usage() -> None:
    provider = SimulationProvider(SimulationSettings())
    one = await provider.complete(_request("why is the sky blue?"))
    two = await provider.complete(_request("why is the sky blue?"))
    other = await provider.complete(_request("why is grass green?"))
    assert one == two
    assert one.content != other.content
    assert one.usage.prompt_tokens == estimate_prompt_tokens(
        _request("why is the sky blue?").messages
    )


async def test_completion_never_exceeds_max_tokens() -> None:
    provider = SimulationProvider(SimulationSettings())
    response = await provider.complete(_request("tell me everything", max_tokens=5))
    assert response.usage.completion_tokens <= 5
    assert response.finish_reason == "length"


async def test_failure_rate_one_always_fails_retryably() -> None:
    provider = SimulationProvider(SimulationSettings(failure_rate=1.0))
    with pytest.raises(ProviderError) as caught:
        await provider.complete(_request("hello"))
    assert caught.value.retryable


@given(
    prompt=st.integers(0, 10**7),
    completion=st.integers(0, 10**7),
    price_in=st.integers(0, 10**8),
    price_out=st.integers(0, 10**8),
)
def test_cost_is_never_under_reported(
    prompt: int, completion: int, price_in: int, price_out: int
) -> None:
    usage = TokenUsage(prompt_tokens=prompt, completion_tokens=completion)
    cost = cost_micro_usd(usage, ModelPrice(input=price_in, output=price_out))
    exact = (prompt * price_in + completion * price_out) / 1_000_000
    assert exact <= cost < exact + 1


def test_an_unpriced_model_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"llm\.pricing"):
        price_for("gpt-unknown", {})


async def test_rate_limit_rate_one_answers_with_a_rate_limit() -> None:
    provider = SimulationProvider(SimulationSettings(rate_limit_rate=1.0), name="sim-b")
    with pytest.raises(ProviderError) as caught:
        await provider.complete(_request("hello"))
    assert caught.value.code == "provider_rate_limited"
    assert caught.value.retryable
    assert caught.value.retry_after_s == 0.05
    assert "sim-b" in caught.value.message


@given(
    prompt=st.integers(0, 10**6),
    cached=st.integers(0, 10**6),
    completion=st.integers(0, 10**6),
)
def test_cached_prompt_tokens_cost_the_cached_price(
    prompt: int, cached: int, completion: int
) -> None:
    cached = min(cached, prompt)
    price = ModelPrice(input=1_000_000, output=2_000_000, cached_input=100_000)
    usage = TokenUsage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
    exact = (prompt - cached) * 1.0 + cached * 0.1 + completion * 2.0
    assert cost_micro_usd(usage, price) == pytest.approx(exact, abs=1)
    assert cost_micro_usd(usage, price) >= exact
    no_cached_price = ModelPrice(input=1_000_000, output=2_000_000)
    assert cost_micro_usd(usage, no_cached_price) == prompt + 2 * completion
