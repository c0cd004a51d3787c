"""What goes to a model and what comes back, independent of any vendor's wire format."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ToolCall(BaseModel):
    """The model asks for a tool to be run with these arguments."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: dict[str, Any]


class ChatMessage(BaseModel):
    """One turn. An assistant turn may carry tool calls; a ``tool`` turn carries the
    result of the call named by ``tool_call_id``."""

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


class ToolSpec(BaseModel):
    """A tool the model may call: its arguments as a JSON schema."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    parameters: dict[str, Any]


class StructuredOutput(BaseModel):
    """Ask for JSON matching a schema instead of free text."""

    model_config = ConfigDict(frozen=True)

    name: str
    json_schema: dict[str, Any]


class ChatRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    messages: tuple[ChatMessage, ...]
    max_tokens: int = Field(ge=1)
    temperature: float = 0.0
    response_format: StructuredOutput | None = None
    tools: tuple[ToolSpec, ...] = ()


class TokenUsage(BaseModel):
    """Usage as the provider reported it: the truth for metering."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    cached_tokens: int = Field(default=0, ge=0)


class ChatResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    provider: str
    model: str
    content: str
    usage: TokenUsage
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"] = "stop"
    tool_calls: tuple[ToolCall, ...] = ()
