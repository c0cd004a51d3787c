"""Every LLM call an agent makes: bounded by the task's budget, cached, costed, keyed for
metering."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from troupe.config import LLMSettings, ModelPrice
from troupe.domain import ModelTier, Usage
from troupe.errors import BudgetExceeded
from troupe.llm.cache import PromptCache, cache_key
from troupe.llm.messages import ChatMessage, ChatRequest, ChatResponse, StructuredOutput
from troupe.llm.pricing import cost_micro_usd, estimate_prompt_tokens, price_for
from troupe.llm.router import Fallback, LLMRouter, Routed
from troupe.observability import metrics
from troupe.storage.repositories import LLMCallRecord


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling, against which budget, and the metering key of this attempt."""

    tenant_id: str
    task_id: str
    token_budget: int
    # Unique per activity attempt; a call's key is this plus the call's index.
    attempt_key: str
    node_id: str | None = None
    # Unique per activity (all its attempts); the attempt key starts with it.
    activity_key: str = ""
    use_cache: bool = True  # the task may opt out of the prompt cache


@dataclass(frozen=True, slots=True)
class MeteredResponse:
    response: ChatResponse
    record: LLMCallRecord


class TokenLedger(Protocol):
    """Where a call reserves its tokens before it is made (``SqlTaskStore``)."""

    async def reserve_tokens(
        self,
        tenant_id: str,
        task_id: str,
        call_key: str,
        *,
        want: int,
        minimum: int,
        stale_prefix: str | None = None,
    ) -> int: ...

    async def release_tokens(self, tenant_id: str, task_id: str, call_key: str) -> None: ...


# Where a call's fallbacks go: (the call's context, what happened).
FallbackSink = Callable[["CallContext", Fallback], Awaitable[None]]


class MeteredLLM:
    """Calls the provider after fitting the call into the budget, unless the prompt cache
    has the answer; returns the usage to record."""

    def __init__(
        self,
        router: LLMRouter,
        settings: LLMSettings,
        ledger: TokenLedger,
        cache: PromptCache | None = None,
        *,
        on_fallback: FallbackSink | None = None,
    ) -> None:
        self._router = router
        self._ledger = ledger
        self._settings = settings
        self._cache = cache
        self._on_fallback = on_fallback

    async def call(
        self,
        ctx: CallContext,
        messages: tuple[ChatMessage, ...],
        *,
        tier: ModelTier,
        index: int = 0,
        response_format: StructuredOutput | None = None,
        model: str | None = None,
    ) -> MeteredResponse:
        """One call, index ``index`` of this activity attempt; ``model`` names a model to
        try before the tier's own candidates.

        The prompt cache is asked first: a hit costs nothing and reserves nothing.
        Otherwise the call's tokens are reserved: the prompt estimate plus up to
        ``llm.max_tokens`` of answer, fewer when the task's budget is short
        (``max_tokens`` shrinks to fit), BudgetExceeded when not even one token of answer
        fits. The reservation is settled when the call's record is stored, or released
        here when the call fails.
        """
        started = time.perf_counter()
        call_key = f"{ctx.attempt_key}:{index}"
        request = ChatRequest(
            model=model or self._settings.model_for(tier),
            messages=messages,
            max_tokens=self._settings.max_tokens,
            response_format=response_format,
        )
        cache = self._cache if ctx.use_cache else None
        key = cache_key(request) if cache is not None else ""
        if cache is not None:
            cached = await cache.get(ctx.tenant_id, key)
            metrics.LLM_CACHE_LOOKUPS.labels(result="miss" if cached is None else "hit").inc()
            if cached is not None:
                return self._hit(ctx, call_key, cached, started)
        prompt = estimate_prompt_tokens(messages)
        try:
            granted = await self._ledger.reserve_tokens(
                ctx.tenant_id,
                ctx.task_id,
                call_key,
                want=prompt + self._settings.max_tokens,
                minimum=prompt + 1,
                # An attempt's first call gives back what earlier, dead attempts still hold.
                stale_prefix=f"{ctx.activity_key}:" if ctx.activity_key and index == 0 else None,
            )
        except BudgetExceeded:
            metrics.BUDGET_REFUSALS.inc()
            raise
        if granted - prompt < request.max_tokens:
            # A shorter answer is another request: another cache entry.
            request = request.model_copy(update={"max_tokens": granted - prompt})
            key = cache_key(request) if cache is not None else ""
        try:
            return await self._answer(ctx, request, tier, model, call_key, cache, key, started)
        except Exception:
            await self._ledger.release_tokens(ctx.tenant_id, ctx.task_id, call_key)
            raise

    @staticmethod
    def _hit(
        ctx: CallContext, call_key: str, cached: ChatResponse, started: float
    ) -> MeteredResponse:
        return MeteredResponse(
            response=cached,
            record=LLMCallRecord(
                call_key=call_key,
                provider=cached.provider,
                model=cached.model,
                usage=Usage(prompt_tokens=0, completion_tokens=0, cost_micro_usd=0),
                cached_tokens=0,
                latency_ms=round((time.perf_counter() - started) * 1000),
                node_id=ctx.node_id,
                cache_hit=True,
            ),
        )

    async def _answer(
        self,
        ctx: CallContext,
        request: ChatRequest,
        tier: ModelTier,
        model: str | None,
        call_key: str,
        cache: PromptCache | None,
        key: str,
        started: float,
    ) -> MeteredResponse:
        first_text_at: float | None = None

        async def first_text(_: str) -> None:
            nonlocal first_text_at
            if first_text_at is None:
                first_text_at = time.perf_counter()

        routed = await self._router.complete(
            request,
            tier=tier,
            model=model,
            on_fallback=self._fallback_sink(ctx),
            on_text=first_text,
        )
        response = routed.response
        if first_text_at is not None:
            metrics.LLM_FIRST_TOKEN_SECONDS.labels(
                provider=response.provider, model=response.model
            ).observe(first_text_at - started)
        latency_ms = round((time.perf_counter() - started) * 1000)
        if cache is not None:
            await cache.put(ctx.tenant_id, key, response)
        usage = Usage(
            prompt_tokens=response.usage.prompt_tokens,
            completion_tokens=response.usage.completion_tokens,
            cost_micro_usd=cost_micro_usd(response.usage, self._price(routed)),
        )
        record = LLMCallRecord(
            call_key=call_key,
            provider=response.provider,
            model=response.model,
            usage=usage,
            cached_tokens=response.usage.cached_tokens,
            latency_ms=latency_ms,
            node_id=ctx.node_id,
        )
        return MeteredResponse(response=response, record=record)

    def _fallback_sink(self, ctx: CallContext) -> Callable[[Fallback], Awaitable[None]] | None:
        sink = self._on_fallback
        if sink is None:
            return None

        async def record(fallback: Fallback) -> None:
            await sink(ctx, fallback)

        return record

    def _price(self, routed: Routed) -> ModelPrice:
        """The reported model's price, else the configured candidate's (providers report
        dated snapshots of the model they were asked for)."""
        pricing = self._settings.pricing
        model = routed.response.model
        return price_for(model if model in pricing else routed.candidate.model, pricing)
