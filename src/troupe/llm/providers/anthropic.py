"""Anthropic messages, through the official ``anthropic`` SDK."""

from __future__ import annotations

from typing import Any, Literal

import anthropic
from anthropic.types import Message
from pydantic import SecretStr

from troupe.llm.base import TextSink
from troupe.llm.messages import ChatMessage, ChatRequest, ChatResponse, TokenUsage, ToolCall
from troupe.llm.providers._http import sdk_failures, trust_env_proxies

_FINISH: dict[str, Literal["stop", "length", "tool_calls", "content_filter"]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class AnthropicProvider:
    """Messages with tools and structured output (``output_config.format``).

    Usage: Anthropic counts cache reads and cache writes apart from ``input_tokens``;
    all three together are the prompt, and cache reads are its cached part, so the
    numbers mean what OpenAI's mean. Retries are the router's: the SDK's own are off.
    ``temperature`` is not sent: this SDK's messages API no longer takes it.
    """

    def __init__(
        self, name: str, *, api_key: SecretStr, base_url: str | None, timeout_s: float
    ) -> None:
        self.name = name
        self._secret = api_key
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key.get_secret_value(),
            base_url=base_url,
            timeout=timeout_s,
            max_retries=0,
            http_client=anthropic.DefaultAsyncHttpxClient(trust_env=trust_env_proxies(base_url)),
        )

    async def complete(
        self, request: ChatRequest, *, on_text: TextSink | None = None
    ) -> ChatResponse:
        arguments = _arguments(request)
        with sdk_failures(self.name, anthropic, self._secret):
            if on_text is None:
                message = await self._client.messages.create(**arguments)
            else:
                message = await self._streamed(arguments, on_text)
        return self._response(request, message)

    async def _streamed(self, arguments: dict[str, Any], on_text: TextSink) -> Message:
        """Stream the answer (the SDK assembles the events into the final message)."""
        async with self._client.messages.stream(**arguments) as stream:
            async for text in stream.text_stream:
                await on_text(text)
            return await stream.get_final_message()

    def _response(self, request: ChatRequest, message: Message) -> ChatResponse:
        text = "".join(block.text for block in message.content if block.type == "text")
        calls = tuple(
            ToolCall(id=block.id, name=block.name, arguments=dict(block.input))
            for block in message.content
            if block.type == "tool_use"
        )
        usage = message.usage
        cache_read = usage.cache_read_input_tokens or 0
        cache_write = usage.cache_creation_input_tokens or 0
        return ChatResponse(
            provider=self.name,
            model=message.model or request.model,
            content=text,
            usage=TokenUsage(
                prompt_tokens=usage.input_tokens + cache_read + cache_write,
                completion_tokens=usage.output_tokens,
                cached_tokens=cache_read,
            ),
            finish_reason=_FINISH.get(message.stop_reason or "end_turn", "stop"),
            tool_calls=calls,
        )

    async def aclose(self) -> None:
        await self._client.close()


def _arguments(request: ChatRequest) -> dict[str, Any]:
    system = "\n\n".join(m.content for m in request.messages if m.role == "system")
    arguments: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": _turns(request.messages),
    }
    if system:
        arguments["system"] = system
    if request.response_format is not None:
        arguments["output_config"] = {
            "format": {"type": "json_schema", "schema": request.response_format.json_schema}
        }
    if request.tools:
        arguments["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
    return arguments


def _turns(messages: tuple[ChatMessage, ...]) -> list[dict[str, Any]]:
    """User and assistant turns as content blocks; tool results are user turns, and
    consecutive turns of one role are merged (the API wants them alternating)."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks: list[dict[str, Any]] = []
        if message.role == "tool":
            blocks.append(
                {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id,
                    "content": message.content,
                }
            )
        elif message.content:
            blocks.append({"type": "text", "text": message.content})
        blocks += [
            {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
            for call in message.tool_calls
        ]
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    return turns
