"""What goes to a model and what comes back, independent of any vendor's wire format."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


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
    finish_reason: Literal["stop", "length"] = "stop"
