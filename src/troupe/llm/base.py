"""The provider Protocol every vendor module and every wrapper implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from troupe.llm.messages import ChatRequest, ChatResponse

# Receives the answer's text as it arrives, piece by piece.
TextSink = Callable[[str], Awaitable[None]]


class LLMProvider(Protocol):
    """Turns a chat request into a response with the provider-reported usage."""

    @property
    def name(self) -> str: ...

    async def complete(
        self, request: ChatRequest, *, on_text: TextSink | None = None
    ) -> ChatResponse:
        """One completion; raises ProviderError (retryable or not) on failure.

        With ``on_text``, a provider that can stream does, handing each piece of text to
        ``on_text`` as it arrives, and still returns the whole response (with the
        provider-reported usage) at the end. A provider that cannot stream ignores it.
        """

    async def aclose(self) -> None: ...
