"""The Tool Protocol and the registry agents look tools up in."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from troupe.errors import InvalidInput, NotFound


class Tool(Protocol):
    """A named capability with typed arguments; ``run`` returns text for the agent."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def arguments(self) -> type[BaseModel]: ...

    async def run(self, arguments: BaseModel) -> str: ...


class ToolError(InvalidInput):
    """A tool refused its arguments or failed; the agent sees the message and can retry."""

    code = "tool_error"


class ToolRegistry:
    """The tools of a deployment, by name; each call's arguments are validated first."""

    def __init__(self, tools: Iterable[Tool] = (), *, max_result_chars: int = 4000) -> None:
        self._tools = {tool.name: tool for tool in tools}
        self._max_result_chars = max_result_chars

    def names(self) -> list[str]:
        return sorted(self._tools)

    async def policy_facts(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """What the policy must know of a call beyond its name and arguments (an http
        tool's target host and address class); ToolError for invalid arguments."""
        tool = self._tools.get(name)
        facts = getattr(tool, "policy_facts", None)
        if tool is None or facts is None:
            return {}
        try:
            parsed = tool.arguments.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(e["msg"] for e in exc.errors(include_url=False))
            raise ToolError(f"bad arguments for {name}: {problems}") from exc
        found: dict[str, Any] = await facts(parsed)
        return found

    def sandboxed(self, name: str) -> bool:
        """Whether the tool runs its work in the sandbox (what the policy asks)."""
        return getattr(self._tools.get(name), "sandboxed", False) is True

    def describe(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Name, description and JSON schema of the arguments, for the LLM."""
        chosen = self.names() if names is None else [n for n in names if n in self._tools]
        return [
            {
                "name": name,
                "description": self._tools[name].description,
                "arguments": self._tools[name].arguments.model_json_schema(),
            }
            for name in chosen
        ]

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        """Run one tool call; the result is cut to the size limit."""
        tool = self._tools.get(name)
        if tool is None:
            raise NotFound(f"no tool named {name!r}", code="tool_not_found")
        try:
            parsed = tool.arguments.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(e["msg"] for e in exc.errors(include_url=False))
            raise ToolError(f"bad arguments for {name}: {problems}") from exc
        result = await tool.run(parsed)
        if len(result) > self._max_result_chars:
            return result[: self._max_result_chars] + "… [cut]"
        return result
