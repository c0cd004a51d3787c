"""The provider Protocol every vendor module and every wrapper implements."""

from __future__ import annotations

from typing import Protocol

from troupe.llm.messages import ChatRequest, ChatResponse


class LLMProvider(Protocol):
    """Turns a chat request into a response with the provider-reported usage."""

    @property
    def name(self) -> str: ...

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """One completion; raises ProviderError (retryable or not) on failure."""

    async def aclose(self) -> None: ...
