"""The router: which provider and model serve a call, and what happens when one fails.

For a tier, the candidates are tried in order: lower priority numbers first; among
equal priorities a weighted random draw decides the order (weight 3 goes first three
times as often as weight 1). A named model goes before the tier's own candidates. With
``fallback_to_lower_tier`` the next tier down (large → medium → small) follows.

Per candidate: a provider whose circuit breaker is open is skipped; otherwise the call
is tried up to ``retry.attempts`` times on retryable errors, with exponential backoff
and jitter (tenacity), waiting at least what a 429's Retry-After asked. When a
candidate gives up, the next one is tried: every such move is a ``Fallback``, handed to
``on_fallback`` (the task's event stream) and counted in
``troupe_llm_fallbacks_total``. When no candidate answers, the last error is raised.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from troupe.config import LLMSettings, TierCandidate
from troupe.domain import ModelTier
from troupe.errors import ProviderError
from troupe.llm.base import LLMProvider, TextSink
from troupe.llm.breaker import BreakerState, CircuitBreaker
from troupe.llm.messages import ChatRequest, ChatResponse
from troupe.observability import metrics

_LOWER_TIER: dict[ModelTier, ModelTier | None] = {
    "large": "medium",
    "medium": "small",
    "small": None,
}


@dataclass(frozen=True, slots=True)
class Fallback:
    """The router left ``provider``/``model`` for the next candidate, and why."""

    provider: str
    model: str
    reason: str  # an error code, or "circuit_open"
    detail: str


OnFallback = Callable[[Fallback], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Routed:
    """An answer and the candidate that gave it (its configured model names the price
    when the provider reports a dated snapshot such as ``gpt-4.1-mini-2025-04-14``)."""

    response: ChatResponse
    candidate: TierCandidate


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    name: str
    kind: str
    breaker: BreakerState
    recent_failures: int


def candidate_order(candidates: Sequence[TierCandidate], rng: random.Random) -> list[TierCandidate]:
    """Priority ascending; within one priority, a weighted draw without replacement."""
    ordered: list[TierCandidate] = []
    for priority in sorted({c.priority for c in candidates}):
        pool = [c for c in candidates if c.priority == priority]
        while pool:
            pick = rng.choices(range(len(pool)), weights=[c.weight for c in pool])[0]
            ordered.append(pool.pop(pick))
    return ordered


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


def _counts_against_health(exc: ProviderError) -> bool:
    return exc.retryable or exc.code == "provider_auth_failed"


class LLMRouter:
    """Serves a request for a tier (or a named model) from the configured providers."""

    def __init__(
        self,
        providers: Mapping[str, LLMProvider],
        settings: LLMSettings,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._providers = dict(providers)
        self._settings = settings
        self._rng = rng or random.Random()  # noqa: S311 - load spreading, not security
        breaker = settings.breaker
        self._breakers = {
            name: CircuitBreaker(
                threshold=breaker.failure_threshold,
                window_s=breaker.window_s,
                cooldown_s=breaker.cooldown_s,
                clock=clock or time.monotonic,
            )
            for name in self._providers
        }
        retry = settings.retry
        self._wait_backoff = wait_exponential_jitter(
            multiplier=retry.initial_backoff_ms / 1000,
            max=retry.max_backoff_ms / 1000,
            jitter=retry.initial_backoff_ms / 1000,
        )

    def plan(self, tier: ModelTier, model: str | None = None) -> list[TierCandidate]:
        """The candidates in the order this call would try them."""
        tiers = self._settings.tiers
        order: list[TierCandidate] = []
        if model is not None:
            named = [c for t in ("small", "medium", "large") for c in tiers[t] if c.model == model]
            order += candidate_order(named, self._rng)
        current: ModelTier | None = tier
        while current is not None:
            order += candidate_order(tiers[current], self._rng)
            current = _LOWER_TIER[current] if self._settings.fallback_to_lower_tier else None
        unique: list[TierCandidate] = []
        for candidate in order:
            if all((c.provider, c.model) != (candidate.provider, candidate.model) for c in unique):
                unique.append(candidate)
        return unique

    async def complete(
        self,
        request: ChatRequest,
        *,
        tier: ModelTier,
        model: str | None = None,
        on_fallback: OnFallback | None = None,
        on_text: TextSink | None = None,
    ) -> Routed:
        """The first answer along ``plan(tier, model)``; ``request.model`` is replaced by
        each candidate's model.

        ``on_text`` receives the answer's text as a streaming provider delivers it. Once
        some text has gone out, a failure is final: retrying or moving on would hand the
        consumer a second answer after part of the first.
        """
        delivered = False

        async def forward(text: str) -> None:
            nonlocal delivered
            delivered = True
            assert on_text is not None
            await on_text(text)

        sink = forward if on_text is not None else None
        candidates = self.plan(tier, model)
        last_error: ProviderError | None = None
        for index, candidate in enumerate(candidates):
            breaker = self._breakers[candidate.provider]
            if not breaker.allow():
                last_error = ProviderError(
                    f"{candidate.provider}'s circuit breaker is open", code="circuit_open"
                )
            else:
                try:
                    answer = await self._call(candidate, request, breaker, sink, lambda: delivered)
                    return Routed(answer, candidate)
                except ProviderError as exc:
                    if delivered:
                        raise
                    last_error = exc
            if index + 1 < len(candidates):
                await self._fell_back(candidate, last_error, on_fallback)
        assert last_error is not None  # the tiers are never empty (config validation)
        raise last_error

    async def _call(
        self,
        candidate: TierCandidate,
        request: ChatRequest,
        breaker: CircuitBreaker,
        on_text: TextSink | None,
        delivered: Callable[[], bool],
    ) -> ChatResponse:
        provider = self._providers[candidate.provider]
        routed = request.model_copy(update={"model": candidate.model})
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._settings.retry.attempts),
            wait=self._wait,
            # No retry once the breaker cut the provider off, or once part of this
            # answer has gone out to the consumer.
            retry=retry_if_exception(
                lambda exc: _retryable(exc) and breaker.state == "closed" and not delivered()
            ),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        response = await provider.complete(
                            routed, on_text=on_text if self._streams(candidate) else None
                        )
                    except ProviderError as exc:
                        metrics.LLM_PROVIDER_ERRORS.labels(
                            provider=candidate.provider, code=exc.code
                        ).inc()
                        if _counts_against_health(exc):
                            breaker.record_failure()
                            self._publish_breaker(candidate.provider)
                        raise
        except asyncio.CancelledError:
            breaker.abandon()
            raise
        breaker.record_success()
        self._publish_breaker(candidate.provider)
        return response

    def _streams(self, candidate: TierCandidate) -> bool:
        return self._settings.providers[candidate.provider].stream

    def _wait(self, state: RetryCallState) -> float:
        backoff = self._wait_backoff(state)
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        asked = error.retry_after_s if isinstance(error, ProviderError) else None
        if asked is None:
            return backoff
        return max(backoff, min(asked, self._settings.retry.max_backoff_ms / 1000))

    async def _fell_back(
        self, candidate: TierCandidate, error: ProviderError, on_fallback: OnFallback | None
    ) -> None:
        metrics.LLM_FALLBACKS.labels(provider=candidate.provider, reason=error.code).inc()
        if on_fallback is not None:
            await on_fallback(
                Fallback(
                    provider=candidate.provider,
                    model=candidate.model,
                    reason=error.code,
                    detail=error.message,
                )
            )

    def _publish_breaker(self, provider: str) -> None:
        closed = self._breakers[provider].state == "closed"
        metrics.LLM_BREAKER_OPEN.labels(provider=provider).set(0 if closed else 1)

    def statuses(self) -> list[ProviderStatus]:
        """Every provider with its breaker's state, as this process sees it."""
        return [
            ProviderStatus(
                name=name,
                kind=self._settings.providers[name].kind,
                breaker=self._breakers[name].state,
                recent_failures=self._breakers[name].recent_failures,
            )
            for name in self._providers
        ]

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
