"""The provider adapters against a loopback server speaking each vendor's wire protocol:
the official SDKs really send the requests and parse the recorded answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from tests.fakes import FakeProviderServer, Reply, fake_provider_server, fixture
from troupe.errors import ProviderError
from troupe.llm.base import TextSink
from troupe.llm.messages import (
    ChatMessage,
    ChatRequest,
    StructuredOutput,
    ToolCall,
    ToolSpec,
)
from troupe.llm.providers.anthropic import AnthropicProvider
from troupe.llm.providers.openai import OpenAIEmbedder, OpenAIProvider

pytestmark = pytest.mark.integration

KEY = SecretStr("sk-test-0123456789abcdef")
CALCULATOR = ToolSpec(
    name="calculator",
    description="Exact arithmetic.",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
)
QUESTION = (
    ChatMessage(role="system", content="You are terse."),
    ChatMessage(role="user", content="What is 2+2?"),
)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeProviderServer]:
    with fake_provider_server() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(server: FakeProviderServer) -> None:
    server.seen.clear()


def _openai(server: FakeProviderServer, *, compatible: bool = False) -> OpenAIProvider:
    return OpenAIProvider(
        "openai-test",
        api_key=KEY,
        base_url=f"{server.base_url}/v1",
        timeout_s=2,
        compatible=compatible,
    )


def _anthropic(server: FakeProviderServer) -> AnthropicProvider:
    return AnthropicProvider("anthropic-test", api_key=KEY, base_url=server.base_url, timeout_s=2)


def _request(**changes: object) -> ChatRequest:
    fields: dict[str, object] = {"model": "m-test", "messages": QUESTION, "max_tokens": 64}
    return ChatRequest.model_validate({**fields, **changes})


async def _failure(
    provider: OpenAIProvider | AnthropicProvider, *, on_text: TextSink | None = None
) -> ProviderError:
    """The ProviderError a call fails with (the provider is closed afterwards)."""
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(_request(), on_text=on_text)
    finally:
        await provider.aclose()
    return caught.value


# --------------------------------------------------------------------------- OpenAI


async def test_openai_text_answer_and_usage(server: FakeProviderServer) -> None:
    server.script(Reply("openai_chat_text"))
    provider = _openai(server)
    response = await provider.complete(_request(model="gpt-4.1-mini"))
    await provider.aclose()
    assert response.content == "2 + 2 is 4."
    assert response.model == "gpt-4.1-mini-2025-04-14"
    assert response.provider == "openai-test"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (19, 8)
    assert response.finish_reason == "stop"
    sent = server.seen[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY.get_secret_value()}"
    assert sent.body["model"] == "gpt-4.1-mini"
    assert sent.body["max_completion_tokens"] == 64
    assert "max_tokens" not in sent.body
    assert sent.body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
    ]


async def test_openai_tool_call_round_trip(server: FakeProviderServer) -> None:
    server.script(Reply("openai_chat_tool_call"))
    provider = _openai(server)
    asked = ChatMessage(
        role="assistant",
        content="",
        tool_calls=(ToolCall(id="call_1", name="calculator", arguments={"expression": "1+1"}),),
    )
    answered = ChatMessage(role="tool", content="2", tool_call_id="call_1")
    response = await provider.complete(
        _request(messages=(*QUESTION, asked, answered), tools=(CALCULATOR,))
    )
    await provider.aclose()
    assert response.finish_reason == "tool_calls"
    assert response.tool_calls == (
        ToolCall(
            id="call_DdmO9pD3xa9XTPNJ32zg2hcA",
            name="calculator",
            arguments={"expression": "17 * 23"},
        ),
    )
    assert response.usage.cached_tokens == 1920
    sent = server.seen[-1].body
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "calculator",
                "description": "Exact arithmetic.",
                "parameters": CALCULATOR.parameters,
            },
        }
    ]
    assert sent["messages"][2]["tool_calls"][0]["function"] == {
        "name": "calculator",
        "arguments": '{"expression": "1+1"}',
    }
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "2"}


async def test_openai_structured_output_sends_the_schema(server: FakeProviderServer) -> None:
    server.script(Reply("openai_chat_structured"))
    schema = {"type": "object", "properties": {"strategy": {"type": "string"}}}
    provider = _openai(server)
    response = await provider.complete(
        _request(response_format=StructuredOutput(name="StrategyChoice", json_schema=schema))
    )
    await provider.aclose()
    assert response.content == '{"strategy":"dag","reason":"two independent parts"}'
    assert server.seen[-1].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "StrategyChoice", "schema": schema},
    }


async def test_a_compatible_server_gets_max_tokens(server: FakeProviderServer) -> None:
    server.script(Reply("openai_chat_text"))
    provider = _openai(server, compatible=True)
    await provider.complete(_request())
    await provider.aclose()
    assert server.seen[-1].body["max_tokens"] == 64
    assert "max_completion_tokens" not in server.seen[-1].body


async def test_openai_429_is_retryable_with_the_servers_retry_after(
    server: FakeProviderServer,
) -> None:
    server.script(Reply("openai_error_429", status=429, headers={"retry-after": "0.12"}))
    failure = await _failure(_openai(server))
    assert failure.code == "provider_rate_limited"
    assert failure.retryable
    assert failure.retry_after_s == pytest.approx(0.12)
    assert "Rate limit reached" in failure.message
    assert len(server.seen) == 1  # the SDK's own retries are off: the router decides


async def test_openai_500_is_retryable(server: FakeProviderServer) -> None:
    server.script(Reply("openai_error_500", status=500))
    failure = await _failure(_openai(server))
    assert failure.code == "provider_unavailable"
    assert failure.retryable


async def test_openai_timeout_is_retryable(server: FakeProviderServer) -> None:
    server.script(Reply("openai_chat_text", delay_s=1.5))
    failure = await _failure(
        OpenAIProvider("openai-test", api_key=KEY, base_url=f"{server.base_url}/v1", timeout_s=0.3)
    )
    assert failure.code == "provider_timeout"
    assert failure.retryable


async def test_an_error_that_echoes_the_key_is_scrubbed(server: FakeProviderServer) -> None:
    echoed = {"error": {"message": f"Incorrect API key provided: {KEY.get_secret_value()}"}}
    server.script(Reply(echoed, status=401))
    failure = await _failure(_openai(server))
    assert failure.code == "provider_auth_failed"
    assert not failure.retryable
    assert KEY.get_secret_value() not in str(failure)
    assert "***" in failure.message


async def test_an_unreachable_server_is_retryable() -> None:
    from troupe.orchestrator.devserver import free_port

    failure = await _failure(
        OpenAIProvider(
            "openai-test", api_key=KEY, base_url=f"http://127.0.0.1:{free_port()}/v1", timeout_s=2
        )
    )
    assert failure.code == "provider_unreachable"
    assert failure.retryable


# --------------------------------------------------------------------------- Anthropic


async def test_anthropic_text_answer_counts_prompt_caching(server: FakeProviderServer) -> None:
    server.script(Reply("anthropic_messages_text"))
    provider = _anthropic(server)
    response = await provider.complete(_request())
    await provider.aclose()
    assert response.content == "2 + 2 is 4."
    assert response.model == "claude-sonnet-4-5-20250929"
    usage = fixture("anthropic_messages_text")["usage"]
    assert response.usage.prompt_tokens == (
        usage["input_tokens"]
        + usage["cache_creation_input_tokens"]
        + usage["cache_read_input_tokens"]
    )
    assert response.usage.cached_tokens == usage["cache_read_input_tokens"]
    assert response.usage.completion_tokens == usage["output_tokens"]
    sent = server.seen[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["authorization"] == f"Bearer {KEY.get_secret_value()}"
    assert sent.body["system"] == "You are terse."
    assert sent.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]}
    ]
    assert sent.body["max_tokens"] == 64


async def test_anthropic_tool_use_round_trip(server: FakeProviderServer) -> None:
    server.script(Reply("anthropic_messages_tool_use"))
    provider = _anthropic(server)
    asked = ChatMessage(
        role="assistant",
        content="Let me compute.",
        tool_calls=(ToolCall(id="toolu_1", name="calculator", arguments={"expression": "1+1"}),),
    )
    answered = ChatMessage(role="tool", content="2", tool_call_id="toolu_1")
    response = await provider.complete(
        _request(messages=(*QUESTION, asked, answered), tools=(CALCULATOR,))
    )
    await provider.aclose()
    assert response.finish_reason == "tool_calls"
    assert response.content == "I'll compute that."
    assert response.tool_calls == (
        ToolCall(
            id="toolu_01A09q90qw90lq917835lq9",
            name="calculator",
            arguments={"expression": "17 * 23"},
        ),
    )
    sent = server.seen[-1].body
    assert sent["tools"] == [
        {
            "name": "calculator",
            "description": "Exact arithmetic.",
            "input_schema": CALCULATOR.parameters,
        }
    ]
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me compute."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "calculator",
                "input": {"expression": "1+1"},
            },
        ],
    }
    assert sent["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "2"}],
    }


async def test_anthropic_structured_output_sends_the_schema(server: FakeProviderServer) -> None:
    server.script(Reply("anthropic_messages_text"))
    schema = {"type": "object", "properties": {"strategy": {"type": "string"}}}
    provider = _anthropic(server)
    await provider.complete(
        _request(response_format=StructuredOutput(name="StrategyChoice", json_schema=schema))
    )
    await provider.aclose()
    assert server.seen[-1].body["output_config"] == {
        "format": {"type": "json_schema", "schema": schema}
    }


async def test_anthropic_overloaded_is_retryable(server: FakeProviderServer) -> None:
    server.script(Reply("anthropic_error_529", status=529))
    failure = await _failure(_anthropic(server))
    assert failure.code == "provider_unavailable"
    assert failure.retryable
    assert len(server.seen) == 1


async def test_anthropic_bad_key_is_not_retryable(server: FakeProviderServer) -> None:
    server.script(Reply("anthropic_error_401", status=401))
    failure = await _failure(_anthropic(server))
    assert failure.code == "provider_auth_failed"
    assert not failure.retryable


# --------------------------------------------------------------------------- streaming


class Pieces:
    def __init__(self) -> None:
        self.texts: list[str] = []

    async def __call__(self, text: str) -> None:
        self.texts.append(text)


async def test_openai_streams_text_and_still_reports_usage(server: FakeProviderServer) -> None:
    server.script(Reply("openai_chat_stream_text"))
    provider = _openai(server)
    pieces = Pieces()
    response = await provider.complete(_request(), on_text=pieces)
    await provider.aclose()
    assert pieces.texts == ["2 + 2", " is 4."]
    assert response.content == "2 + 2 is 4."
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (19, 8)
    assert response.finish_reason == "stop"
    sent = server.seen[-1].body
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_anthropic_streams_text_and_still_reports_usage(server: FakeProviderServer) -> None:
    server.script(Reply("anthropic_messages_stream_text"))
    provider = _anthropic(server)
    pieces = Pieces()
    response = await provider.complete(_request(), on_text=pieces)
    await provider.aclose()
    assert pieces.texts == ["2 + 2", " is 4."]
    assert response.content == "2 + 2 is 4."
    assert response.usage.prompt_tokens == 12 + 300 + 1800
    assert response.usage.cached_tokens == 1800
    assert response.usage.completion_tokens == 9
    assert server.seen[-1].body["stream"] is True


async def test_a_stream_refused_up_front_maps_like_any_answer(server: FakeProviderServer) -> None:
    server.script(Reply("openai_error_429", status=429, headers={"retry-after": "1"}))
    failure = await _failure(_openai(server), on_text=Pieces())
    assert failure.code == "provider_rate_limited"
    assert failure.retry_after_s == 1.0


async def test_openai_embeddings_come_back_in_input_order_at_the_asked_size(
    server: FakeProviderServer,
) -> None:
    server.script(Reply("openai_embeddings"))
    embedder = OpenAIEmbedder(
        "openai-test",
        api_key=KEY,
        base_url=f"{server.base_url}/v1",
        timeout_s=2,
        model="text-embedding-3-small",
        dimensions=4,
        batch_size=2,
    )
    try:
        vectors = await embedder.embed(["first", "second"])
    finally:
        await embedder.aclose()
    # The server listed them out of order; index decides.
    assert vectors == [[0.6, 0.0, 0.8, 0.0], [0.0, 1.0, 0.0, 0.0]]
    (seen,) = server.seen
    assert seen.path == "/v1/embeddings"
    assert seen.body["input"] == ["first", "second"]
    assert seen.body["dimensions"] == 4
    assert seen.headers["authorization"] == f"Bearer {KEY.get_secret_value()}"


async def test_embeddings_of_another_size_than_configured_are_refused(
    server: FakeProviderServer,
) -> None:
    server.script(Reply("openai_embeddings"))
    embedder = OpenAIEmbedder(
        "local-vllm",
        api_key=None,
        base_url=f"{server.base_url}/v1",
        timeout_s=2,
        model="bge-small",
        dimensions=384,
        batch_size=8,
        compatible=True,
    )
    try:
        with pytest.raises(ProviderError, match=r"memory\.embeddings\.dimensions is 384") as caught:
            await embedder.embed(["first", "second"])
    finally:
        await embedder.aclose()
    assert not caught.value.retryable
    # A compatible server is not sent OpenAI's dimensions parameter.
    assert "dimensions" not in server.seen[0].body
