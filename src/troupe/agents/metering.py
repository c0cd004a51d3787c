"""Every LLM call an agent makes: bounded by its budgets, cached, costed, keyed for
metering."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from troupe.config import LLMSettings, ModelPrice, TierCandidate
from troupe.domain import Actor, ModelTier, TaskBudgets, Usage
from troupe.errors import BudgetExceeded
from troupe.llm.cache import PromptCache, cache_key
from troupe.llm.messages import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    StructuredOutput,
    ToolSpec,
)
from troupe.llm.pricing import cost_micro_usd, estimate_prompt_tokens, price_for
from troupe.llm.router import Fallback, LLMRouter, Routed
from troupe.observability import metrics
from troupe.observability.tracing import tracer
from troupe.policy.authorizer import Authorizer
from troupe.storage.ledger import Ask, Budget, Grant
from troupe.storage.repositories import LLMCallRecord, day_counter


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling, against which budget, and the metering key of this attempt."""

    tenant_id: str
    task_id: str
    budgets: TaskBudgets
    # Unique per activity attempt; a call's key is this plus the call's index.
    attempt_key: str
    node_id: str | None = None
    session_id: str | None = None
    # Unique per activity (all its attempts); the attempt key starts with it.
    activity_key: str = ""
    use_cache: bool = True  # the task may opt out of the prompt cache
    # Whose task it is, for the policy's model.use decision (None: not judged).
    actor: Actor | None = None

    def budgets_now(self) -> list[Budget]:
        """The budgets a call made now draws on: its task's, its node's and its
        session's when they have limits, and its tenant's current UTC day's (always:
        the day's use is what the budgets view and the alerts read)."""
        b = self.budgets
        drawn = [Budget(f"task:{self.task_id}", b.task_tokens, b.task_micro_usd)]
        if self.node_id is not None and b.node_tokens is not None:
            drawn.append(Budget(f"node:{self.task_id}:{self.node_id}", b.node_tokens))
        if self.session_id is not None and (
            b.session_tokens is not None or b.session_micro_usd is not None
        ):
            counter = f"session:{self.tenant_id}:{self.session_id}"
            drawn.append(Budget(counter, b.session_tokens, b.session_micro_usd))
        today = datetime.now(UTC).date().isoformat()
        drawn.append(Budget(day_counter(self.tenant_id, today), b.day_tokens, b.day_micro_usd))
        return drawn


@dataclass(frozen=True, slots=True)
class MeteredResponse:
    response: ChatResponse
    record: LLMCallRecord


class BudgetLedger(Protocol):
    """Where a call reserves against its budgets before it is made (``SqlTaskStore``;
    the reservation is settled when the call's usage is recorded)."""

    async def reserve(
        self,
        tenant_id: str,
        task_id: str,
        call_key: str,
        *,
        budgets: Sequence[Budget],
        ask: Ask,
        stale_prefix: str | None = None,
    ) -> Grant: ...

    async def release(self, tenant_id: str, task_id: str, call_key: str) -> None: ...


# Where a call's fallbacks go: (the call's context, what happened).
FallbackSink = Callable[["CallContext", Fallback], Awaitable[None]]


class MeteredLLM:
    """Calls the provider after fitting the call into the budget, unless the prompt cache
    has the answer; returns the usage to record."""

    def __init__(
        self,
        router: LLMRouter,
        settings: LLMSettings,
        ledger: BudgetLedger,
        cache: PromptCache | None = None,
        *,
        on_fallback: FallbackSink | None = None,
        authorizer: Authorizer | None = None,
    ) -> None:
        self._authorizer = authorizer
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
        tools: tuple[ToolSpec, ...] = (),
    ) -> MeteredResponse:
        """One metered call (below), as an ``llm.call`` span of the task's trace."""
        attributes = {"troupe.tier": tier, "troupe.task_id": ctx.task_id}
        with tracer().start_as_current_span("llm.call", attributes=attributes) as span:
            metered = await self._call(
                ctx,
                messages,
                tier=tier,
                index=index,
                response_format=response_format,
                model=model,
                tools=tools,
            )
            record = metered.record
            span.set_attributes(
                {
                    "gen_ai.system": record.provider,
                    "gen_ai.response.model": record.model,
                    "gen_ai.usage.input_tokens": record.usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": record.usage.completion_tokens,
                    "troupe.cost_micro_usd": record.usage.cost_micro_usd,
                    "troupe.cache_hit": record.cache_hit,
                }
            )
            return metered

    async def _call(
        self,
        ctx: CallContext,
        messages: tuple[ChatMessage, ...],
        *,
        tier: ModelTier,
        index: int,
        response_format: StructuredOutput | None,
        model: str | None,
        tools: tuple[ToolSpec, ...],
    ) -> MeteredResponse:
        """One call, index ``index`` of this activity attempt; ``model`` names a model to
        try before the tier's own candidates.

        The prompt cache is asked first: a hit costs nothing and reserves nothing.
        Otherwise the call reserves against every budget it draws on (task, node,
        session, tenant day) at once: the prompt estimate plus up to ``llm.max_tokens``
        of answer, in tokens and in micro-dollars at the dearest price of the models
        that may serve it; fewer when a budget is short (``max_tokens`` shrinks to fit),
        BudgetExceeded when not even one token of answer fits. The reservation is
        settled when the call's record is stored, or released here when the call fails.
        """
        started = time.perf_counter()
        call_key = f"{ctx.attempt_key}:{index}"
        request = ChatRequest(
            model=model or self._settings.model_for(tier),
            messages=messages,
            max_tokens=self._settings.max_tokens,
            response_format=response_format,
            tools=tools,
        )
        # The models this call may reach, in the order it would try them.
        candidates = self._router.plan(tier, model)
        if self._authorizer is not None and ctx.actor is not None:
            # Before the cache too: a cached answer is still that model's output.
            await self._authorizer.require(
                "model.use",
                ctx.actor,
                {"tier": tier, "model": request.model, "provider": candidates[0].provider},
                task_id=ctx.task_id,
            )
        cache = self._cache if ctx.use_cache else None
        key = cache_key(request) if cache is not None else ""
        if cache is not None:
            cached = await cache.get(ctx.tenant_id, key)
            metrics.LLM_CACHE_LOOKUPS.labels(result="miss" if cached is None else "hit").inc()
            if cached is not None:
                return self._hit(ctx, call_key, cached, started)
        input_price, output_price = self._dearest_prices(candidates)
        ask = Ask(
            prompt_tokens=estimate_prompt_tokens(messages),
            answer_tokens=self._settings.max_tokens,
            input_price=input_price,
            output_price=output_price,
        )
        try:
            grant = await self._ledger.reserve(
                ctx.tenant_id,
                ctx.task_id,
                call_key,
                budgets=ctx.budgets_now(),
                ask=ask,
                # An attempt's first call gives back what earlier, dead attempts still hold.
                stale_prefix=f"{ctx.activity_key}:" if ctx.activity_key and index == 0 else None,
            )
        except BudgetExceeded:
            metrics.BUDGET_REFUSALS.inc()
            raise
        if grant.answer_tokens < request.max_tokens:
            # A shorter answer is another request: another cache entry.
            request = request.model_copy(update={"max_tokens": grant.answer_tokens})
            key = cache_key(request) if cache is not None else ""
        try:
            return await self._answer(ctx, request, tier, model, call_key, cache, key, started)
        except Exception:
            await self._ledger.release(ctx.tenant_id, ctx.task_id, call_key)
            raise

    def _dearest_prices(self, candidates: list[TierCandidate]) -> tuple[int, int]:
        """The highest input and output prices among the models this call may reach
        (its candidates and fallbacks): what its money reservation is priced at."""
        prices = [price_for(c.model, self._settings.pricing) for c in candidates]
        return max(p.input for p in prices), max(p.output for p in prices)

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
