"""OpenAI chat completions, and any OpenAI-compatible server (vLLM, Ollama, llama.cpp
server) by base URL, through the official ``openai`` SDK."""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletion
from pydantic import SecretStr

from troupe.errors import ProviderError
from troupe.llm.base import TextSink
from troupe.llm.messages import ChatMessage, ChatRequest, ChatResponse, TokenUsage, ToolCall
from troupe.llm.pricing import estimate_prompt_tokens
from troupe.llm.providers._http import sdk_failures, trust_env_proxies

logger = logging.getLogger(__name__)

_FINISH: dict[str, Literal["stop", "length", "tool_calls", "content_filter"]] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class OpenAIProvider:
    """Chat completions with tools and structured output (JSON schema).

    ``compatible``: a self-hosted OpenAI-compatible server. Such servers know
    ``max_tokens`` rather than OpenAI's newer ``max_completion_tokens``, and many need no
    key. Retries are the router's: the SDK's own are off.
    """

    def __init__(
        self,
        name: str,
        *,
        api_key: SecretStr | None,
        base_url: str | None,
        timeout_s: float,
        compatible: bool = False,
    ) -> None:
        self.name = name
        self._secret = api_key
        self._compatible = compatible
        self._client = _sdk_client(api_key, base_url, timeout_s, max_retries=0)

    async def complete(
        self, request: ChatRequest, *, on_text: TextSink | None = None
    ) -> ChatResponse:
        arguments = self._arguments(request)
        with sdk_failures(self.name, openai, self._secret):
            if on_text is None:
                completion = await self._client.chat.completions.create(**arguments)
            else:
                completion = await self._streamed(arguments, on_text)
        return self._response(request, completion)

    async def _streamed(self, arguments: dict[str, Any], on_text: TextSink) -> ChatCompletion:
        """Stream the answer (the SDK assembles the chunks, usage comes last)."""
        stream_manager = self._client.chat.completions.stream(
            **arguments, stream_options={"include_usage": True}
        )
        async with stream_manager as stream:
            async for event in stream:
                if event.type == "content.delta" and event.delta:
                    await on_text(event.delta)
            return await stream.get_final_completion()

    def _arguments(self, request: ChatRequest) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": request.model,
            "messages": [_message(m) for m in request.messages],
            "temperature": request.temperature,
            ("max_tokens" if self._compatible else "max_completion_tokens"): request.max_tokens,
        }
        if request.response_format is not None:
            arguments["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.response_format.name,
                    "schema": request.response_format.json_schema,
                },
            }
        if request.tools:
            arguments["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    },
                }
                for tool in request.tools
            ]
        return arguments

    def _response(self, request: ChatRequest, completion: ChatCompletion) -> ChatResponse:
        if not completion.choices:
            raise ProviderError(
                f"{self.name} answered without a choice", code="provider_bad_answer"
            )
        choice = completion.choices[0]
        calls = tuple(
            _tool_call(self.name, call.id, call.function.name, call.function.arguments)
            for call in choice.message.tool_calls or ()
            if call.type == "function"
        )
        content = choice.message.content or ""
        if completion.usage is not None:
            details = completion.usage.prompt_tokens_details
            usage = TokenUsage(
                prompt_tokens=completion.usage.prompt_tokens,
                completion_tokens=completion.usage.completion_tokens,
                cached_tokens=(details.cached_tokens or 0) if details else 0,
            )
        else:
            # Some compatible servers leave usage out; metering then falls back to an
            # estimate rather than to zero, and says so.
            logger.warning("%s reported no usage; tokens are estimated", self.name)
            usage = TokenUsage(
                prompt_tokens=estimate_prompt_tokens(request.messages),
                completion_tokens=max(1, len(content) // 4),
            )
        return ChatResponse(
            provider=self.name,
            model=completion.model or request.model,
            content=content,
            usage=usage,
            finish_reason=_FINISH.get(choice.finish_reason, "stop"),
            tool_calls=calls,
        )

    async def aclose(self) -> None:
        await self._client.close()


def _sdk_client(
    api_key: SecretStr | None, base_url: str | None, timeout_s: float, *, max_retries: int
) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        # The SDK insists on a key; a keyless local server ignores this one.
        api_key=api_key.get_secret_value() if api_key else "no-key",
        base_url=base_url,
        timeout=timeout_s,
        max_retries=max_retries,
        http_client=openai.DefaultAsyncHttpxClient(trust_env=trust_env_proxies(base_url)),
    )


def _message(message: ChatMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        wire["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in message.tool_calls
        ]
    return wire


def _tool_call(provider: str, call_id: str, name: str, arguments: str) -> ToolCall:
    try:
        parsed = json.loads(arguments or "{}")
    except json.JSONDecodeError as exc:
        raise ProviderError(
            f"{provider} called {name} with arguments that are not JSON: {exc}",
            code="provider_bad_answer",
        ) from None
    if not isinstance(parsed, dict):
        raise ProviderError(
            f"{provider} called {name} with arguments that are not an object",
            code="provider_bad_answer",
        )
    return ToolCall(id=call_id, name=name, arguments=parsed)


class OpenAIEmbedder:
    """Embeddings from OpenAI or an OpenAI-compatible server (``memory.embeddings``).

    OpenAI's text-embedding-3 models shorten their vectors to ``dimensions`` when asked;
    a compatible server is not asked (many reject the parameter) and must give that
    size itself.
    """

    def __init__(
        self,
        name: str,
        *,
        api_key: SecretStr | None,
        base_url: str | None,
        timeout_s: float,
        model: str,
        dimensions: int,
        batch_size: int,
        compatible: bool = False,
    ) -> None:
        self._provider = name
        self._secret = api_key
        self._model = model
        self._dimensions = dimensions
        self._batch_size = batch_size
        self._compatible = compatible
        # No router in front of embeddings: the SDK retries transient failures itself.
        self._client = _sdk_client(api_key, base_url, timeout_s, max_retries=2)

    @property
    def name(self) -> str:
        return f"{self._provider}:{self._model}"

    @property
    def dimensions(self) -> int:
        return self._dimensions

    async def embed(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            vectors += await self._batch(texts[start : start + self._batch_size])
        return vectors

    async def _batch(self, texts: list[str]) -> list[list[float]]:
        extra: dict[str, Any] = {} if self._compatible else {"dimensions": self._dimensions}
        with sdk_failures(self._provider, openai, self._secret):
            answer = await self._client.embeddings.create(
                model=self._model, input=texts, encoding_format="float", **extra
            )
        ordered = sorted(answer.data, key=lambda item: item.index)
        vectors = [list(item.embedding) for item in ordered]
        if len(vectors) != len(texts) or any(len(v) != self._dimensions for v in vectors):
            sizes = sorted({len(v) for v in vectors})
            raise ProviderError(
                f"{self._provider} gave {len(vectors)} embeddings of {sizes} dimensions for "
                f"{len(texts)} texts; memory.embeddings.dimensions is {self._dimensions}",
                code="provider_rejected",
                retryable=False,
            )
        return vectors

    async def aclose(self) -> None:
        await self._client.close()
