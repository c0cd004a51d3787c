"""Fakes shipped with the package, for tests of Troupe and of code built on it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from troupe.config import LLMSettings
from troupe.llm.base import LLMProvider, TextSink
from troupe.llm.messages import ChatRequest, ChatResponse, TokenUsage
from troupe.llm.pricing import estimate_prompt_tokens
from troupe.llm.router import LLMRouter
from troupe.storage.ledger import Ask, Budget, Grant


def scripted_answer(content: str, *, completion_tokens: int = 10) -> ChatResponse:
    """A response the ScriptedProvider will return (usage filled in per request)."""
    return ChatResponse(
        provider="scripted",
        model="sim-small",
        content=content,
        usage=TokenUsage(prompt_tokens=0, completion_tokens=completion_tokens),
    )


class ScriptedProvider:
    """Plays back a script of responses and errors, one per call, and records requests.

    The last step repeats when the script runs out. A response's prompt tokens are
    computed from the request, as a real provider would report them. ``gate``, when
    given, holds every call until it is set (to test cancellation and slowness).
    """

    name = "scripted"

    def __init__(
        self, script: Sequence[ChatResponse | Exception], *, gate: asyncio.Event | None = None
    ) -> None:
        if not script:
            raise ValueError("a script needs at least one step")
        self._script = list(script)
        self._gate = gate
        self.requests: list[ChatRequest] = []
        self.cancelled = 0

    async def complete(
        self, request: ChatRequest, *, on_text: TextSink | None = None
    ) -> ChatResponse:
        self.requests.append(request)
        step = self._script[min(len(self.requests), len(self._script)) - 1]
        if self._gate is not None:
            try:
                await self._gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if isinstance(step, Exception):
            raise step
        usage = step.usage.model_copy(
            update={"prompt_tokens": estimate_prompt_tokens(request.messages)}
        )
        return step.model_copy(update={"model": request.model, "usage": usage})

    async def aclose(self) -> None:
        return None


Responder = Callable[[ChatRequest], Awaitable[ChatResponse | str]]


class FunctionProvider:
    """A provider whose every answer comes from a test's async function.

    The function gets the request and returns a ChatResponse, or just the text (usage
    is then estimated from the request and the text), or raises. Calls are recorded.
    """

    name = "function"

    def __init__(self, respond: Responder) -> None:
        self._respond = respond
        self.requests: list[ChatRequest] = []

    async def complete(
        self, request: ChatRequest, *, on_text: TextSink | None = None
    ) -> ChatResponse:
        self.requests.append(request)
        answer = await self._respond(request)
        if isinstance(answer, ChatResponse):
            return answer
        return ChatResponse(
            provider=self.name,
            model=request.model,
            content=answer,
            usage=TokenUsage(
                prompt_tokens=estimate_prompt_tokens(request.messages),
                completion_tokens=max(1, len(answer) // 4),
            ),
        )

    async def aclose(self) -> None:
        return None


def routed(provider: LLMProvider, settings: LLMSettings | None = None) -> LLMRouter:
    """A router that sends every candidate of every tier to ``provider``."""
    llm = settings or LLMSettings()
    return LLMRouter(dict.fromkeys(llm.providers, provider), llm)


class UnlimitedLedger:
    """A budget ledger that grants every call all it asks for, for tests of other
    concerns (budgets are enforced by ``SqlTaskStore``; their tests use the real one)."""

    def __init__(self) -> None:
        self.held: dict[str, Grant] = {}

    async def reserve(
        self,
        tenant_id: str,
        task_id: str,
        call_key: str,
        *,
        budgets: Sequence[Budget],
        ask: Ask,
        stale_prefix: str | None = None,
    ) -> Grant:
        grant = Grant(
            answer_tokens=ask.answer_tokens,
            tokens=ask.prompt_tokens + ask.answer_tokens,
            micro_usd=ask.micro_usd(ask.answer_tokens),
        )
        self.held[call_key] = grant
        return grant

    async def release(self, tenant_id: str, task_id: str, call_key: str) -> None:
        self.held.pop(call_key, None)
