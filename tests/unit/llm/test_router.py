"""Routing: candidate order, retries, fallback and breakers, with scripted providers."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from troupe.config import LLMSettings, TierCandidate
from troupe.errors import ProviderError
from troupe.llm.base import LLMProvider, TextSink
from troupe.llm.messages import ChatMessage, ChatRequest
from troupe.llm.router import Fallback, LLMRouter, candidate_order
from troupe.testing import ScriptedProvider, scripted_answer

REQUEST = ChatRequest(
    model="ignored", messages=(ChatMessage(role="user", content="hi"),), max_tokens=50
)


def _down(code: str = "provider_unavailable", *, retryable: bool = True) -> ProviderError:
    return ProviderError("down", code=code, retryable=retryable)


def _settings(**changes: object) -> LLMSettings:
    """Three providers: small is a then b (same priority 1, weights 1) then c (priority 2)."""
    base: dict[str, object] = {
        "providers": {name: {"kind": "simulation"} for name in ("a", "b", "c")},
        "tiers": {
            "small": [
                {"provider": "a", "model": "sim-small", "priority": 1},
                {"provider": "c", "model": "sim-large", "priority": 2},
            ],
            "medium": [{"provider": "b", "model": "sim-small"}],
            "large": [{"provider": "c", "model": "sim-large"}],
        },
        "retry": {"attempts": 2, "initial_backoff_ms": 0, "max_backoff_ms": 0},
        "breaker": {"failure_threshold": 2, "window_s": 60, "cooldown_s": 30},
    }
    return LLMSettings.model_validate({**base, **changes})


def _idle() -> ScriptedProvider:
    """A provider the test expects the router not to reach."""
    return ScriptedProvider([scripted_answer("not expected")])


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _router(
    providers: dict[str, LLMProvider],
    settings: LLMSettings | None = None,
    clock: Clock | None = None,
) -> LLMRouter:
    return LLMRouter(providers, settings or _settings(), rng=random.Random(7), clock=clock)


_candidates = st.lists(
    st.builds(
        TierCandidate,
        provider=st.sampled_from(["a", "b", "c", "d"]),
        model=st.text(alphabet="xyz", min_size=1, max_size=3),
        priority=st.integers(min_value=0, max_value=3),
        weight=st.integers(min_value=1, max_value=5),
    ),
    min_size=1,
    max_size=8,
)


@given(_candidates, st.integers())
def test_order_is_a_permutation_sorted_by_priority(
    candidates: list[TierCandidate], seed: int
) -> None:
    ordered = candidate_order(candidates, random.Random(seed))
    assert sorted(map(repr, ordered)) == sorted(map(repr, candidates))
    priorities = [c.priority for c in ordered]
    assert priorities == sorted(priorities)


def test_weights_decide_how_often_a_candidate_goes_first() -> None:
    heavy = TierCandidate(provider="a", model="m", weight=3)
    light = TierCandidate(provider="b", model="m", weight=1)
    rng = random.Random(1)
    firsts = Counter(candidate_order([heavy, light], rng)[0].provider for _ in range(4000))
    assert 0.70 < firsts["a"] / 4000 < 0.80  # 3:1 → 75 %


def test_plan_puts_a_named_model_first_then_the_tier_then_lower_tiers() -> None:
    router = _router({})
    plan = [(c.provider, c.model) for c in router.plan("medium", model="sim-large")]
    assert plan == [("c", "sim-large"), ("b", "sim-small"), ("a", "sim-small")]
    without = _router({}, _settings(fallback_to_lower_tier=False))
    assert [(c.provider, c.model) for c in without.plan("medium")] == [("b", "sim-small")]


async def test_a_retryable_error_is_retried_on_the_same_candidate() -> None:
    a = ScriptedProvider([_down(), scripted_answer("from a")])
    router = _router({"a": a, "b": _idle(), "c": _idle()})
    response = (await router.complete(REQUEST, tier="small")).response
    assert response.content == "from a"
    assert len(a.requests) == 2
    assert a.requests[0].model == "sim-small"


async def test_fallback_ends_on_the_next_healthy_candidate_and_is_reported() -> None:
    a = ScriptedProvider([_down()])
    c = ScriptedProvider([scripted_answer("from c")])
    seen: list[Fallback] = []

    async def record(fallback: Fallback) -> None:
        seen.append(fallback)

    router = _router({"a": a, "b": _idle(), "c": c})
    routed = await router.complete(REQUEST, tier="small", on_fallback=record)
    assert routed.response.content == "from c"
    assert routed.candidate.provider == "c"
    assert len(a.requests) == 2  # retried, then given up
    assert c.requests[0].model == "sim-large"
    assert seen == [
        Fallback(provider="a", model="sim-small", reason="provider_unavailable", detail="down")
    ]


async def test_a_rejected_request_moves_on_at_once() -> None:
    a = ScriptedProvider([_down("provider_rejected", retryable=False)])
    c = ScriptedProvider([scripted_answer("from c")])
    router = _router({"a": a, "b": _idle(), "c": c})
    assert (await router.complete(REQUEST, tier="small")).response.content == "from c"
    assert len(a.requests) == 1


async def test_when_every_candidate_fails_the_last_error_is_raised() -> None:
    failing = {name: ScriptedProvider([_down()]) for name in ("a", "b", "c")}
    router = _router(dict(failing))
    with pytest.raises(ProviderError) as caught:
        await router.complete(REQUEST, tier="small")
    assert caught.value.code in {"provider_unavailable", "circuit_open"}


async def test_the_breaker_opens_skips_the_provider_and_recovers() -> None:
    clock = Clock()
    a = ScriptedProvider([_down(), _down(), scripted_answer("a is back")])
    c = ScriptedProvider([scripted_answer("from c")])
    router = _router({"a": a, "b": _idle(), "c": c}, clock=clock)
    await router.complete(REQUEST, tier="small")  # a fails twice: threshold 2 opens it
    assert {s.name: s.breaker for s in router.statuses()}["a"] == "open"
    calls_to_a = len(a.requests)
    await router.complete(REQUEST, tier="small")
    assert len(a.requests) == calls_to_a  # skipped while open
    clock.now += 31  # past the cooldown: one probe
    response = (await router.complete(REQUEST, tier="small")).response
    assert response.content == "a is back"
    assert {s.name: s.breaker for s in router.statuses()}["a"] == "closed"


async def test_a_429_retry_after_is_honoured() -> None:
    limited = ProviderError(
        "slow down", code="provider_rate_limited", retryable=True, retry_after_s=0.2
    )
    a = ScriptedProvider([limited, scripted_answer("ok")])
    settings = _settings(retry={"attempts": 2, "initial_backoff_ms": 0, "max_backoff_ms": 5000})
    router = _router({"a": a, "b": _idle(), "c": _idle()}, settings)
    started = time.monotonic()
    await router.complete(REQUEST, tier="small")
    assert time.monotonic() - started >= 0.2


class HalfStream:
    """Streams one piece of text, then fails: an answer cut off midway."""

    name = "half"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: ChatRequest, *, on_text: TextSink | None = None) -> Any:
        self.calls += 1
        if on_text is not None:
            await on_text("The answer is")
        raise _down()

    async def aclose(self) -> None:
        return None


async def test_no_retry_or_fallback_once_text_has_gone_out() -> None:
    half = HalfStream()
    c = ScriptedProvider([scripted_answer("from c")])
    router = _router({"a": half, "b": _idle(), "c": c})
    pieces: list[str] = []

    async def collect(text: str) -> None:
        pieces.append(text)

    with pytest.raises(ProviderError):
        await router.complete(REQUEST, tier="small", on_text=collect)
    assert half.calls == 1  # not retried although the error is retryable
    assert c.requests == []  # and no second answer after part of the first
    assert pieces == ["The answer is"]


async def test_without_a_consumer_the_same_failure_falls_back() -> None:
    half = HalfStream()
    c = ScriptedProvider([scripted_answer("from c")])
    router = _router({"a": half, "b": _idle(), "c": c})
    routed = await router.complete(REQUEST, tier="small")
    assert routed.response.content == "from c"
    assert half.calls == 2


async def test_a_provider_with_streaming_off_gets_no_consumer() -> None:
    half = HalfStream()
    c = ScriptedProvider([scripted_answer("from c")])
    settings = _settings(
        providers={
            "a": {"kind": "simulation"},
            "b": {"kind": "simulation"},
            "c": {"kind": "simulation"},
        }
    )
    off = settings.model_copy(
        update={
            "providers": {
                **settings.providers,
                "a": settings.providers["a"].model_copy(update={"stream": False}),
            }
        }
    )
    router = _router({"a": half, "b": _idle(), "c": c}, off)
    pieces: list[str] = []

    async def collect(text: str) -> None:
        pieces.append(text)

    routed = await router.complete(REQUEST, tier="small", on_text=collect)
    assert routed.response.content == "from c"
    assert pieces == []
