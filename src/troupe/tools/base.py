"""The Tool Protocol, the outcome of a call, and the registry agents look tools up in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol, cast

from pydantic import BaseModel, ValidationError

from troupe.errors import InvalidInput
from troupe.observability import metrics
from troupe.observability.tracing import tracer


class ToolError(InvalidInput):
    """A tool refused its arguments or failed; the agent sees the message and can retry."""

    code = "tool_error"


@dataclass(frozen=True)
class ToolCaller:
    """Whose agent calls: tools that keep tenant data (memory) answer within it only."""

    tenant_id: str
    task_id: str
    session_id: str | None = None


@dataclass(frozen=True)
class ToolOutput:
    """What one call gave the agent, and what it cost.

    ``confidence`` is how far the agent may trust the text as a fact: exact tools
    (arithmetic) say 1.0, a page from the web much less. ``fuel`` is the sandbox's
    CPU measure when the tool ran code there.
    """

    text: str
    ok: bool = True
    confidence: float = 0.8
    seconds: float = 0.0
    fuel: int | None = None


class Tool(Protocol):
    """A named capability; the registry validates arguments with ``parse`` first."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    # The arguments as a JSON schema, for the LLM.
    def parameters(self) -> dict[str, Any]: ...

    # The arguments, validated; ToolError when they are not acceptable.
    def parse(self, arguments: dict[str, Any]) -> Any: ...

    async def run(self, arguments: Any) -> ToolOutput: ...


class CallerTool(Tool, Protocol):
    """A tool that keeps tenant data (``needs_caller = True``): the registry runs it for
    the calling task's tenant."""

    async def run_for(self, arguments: Any, caller: ToolCaller) -> ToolOutput: ...


class TypedTool:
    """A tool whose arguments are a pydantic model (the built-ins)."""

    name: ClassVar[str]
    description: ClassVar[str]
    arguments: ClassVar[type[BaseModel]]
    sandboxed: ClassVar[bool] = False

    def parameters(self) -> dict[str, Any]:
        return self.arguments.model_json_schema()

    def parse(self, arguments: dict[str, Any]) -> BaseModel:
        try:
            return self.arguments.model_validate(arguments)
        except ValidationError as exc:
            raise ToolError(f"bad arguments for {self.name}: {problems(exc)}") from exc


def problems(exc: ValidationError) -> str:
    """What is wrong with some arguments, field by field, for the agent to fix."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
        for e in exc.errors(include_url=False)
    )


class ToolRegistry:
    """The tools of a deployment, by name.

    A call never raises for the tool's sake: unknown tools, bad arguments, tool errors
    and timeouts all come back as a failed ToolOutput the agent can read and react to.
    A tool may be visible to some tenants only (``tenants``, e.g. an MCP server
    configured for them).
    """

    def __init__(
        self,
        tools: Iterable[Tool] = (),
        *,
        max_result_chars: int = 4000,
        timeout_s: float = 30,
    ) -> None:
        self._tools: dict[str, Tool] = {}
        self._max_result_chars = max_result_chars
        self._timeout_s = timeout_s
        self.extend(tools)

    def extend(self, tools: Iterable[Tool]) -> None:
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"two tools are named {tool.name!r}")
            self._tools[tool.name] = tool
            for outcome in ("ok", "error"):  # exported at zero from the start
                metrics.TOOL_CALLS.labels(tool=tool.name, outcome=outcome)

    def names(self, tenant_id: str | None = None) -> list[str]:
        """Every tool, or those the tenant may see."""
        return sorted(n for n in self._tools if tenant_id is None or self.visible(n, tenant_id))

    def visible(self, name: str, tenant_id: str) -> bool:
        tool = self._tools.get(name)
        if tool is None:
            return False
        tenants = getattr(tool, "tenants", None)
        return not tenants or tenant_id in tenants

    async def policy_facts(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """What the policy must know of a call beyond its name and arguments (an http
        tool's target host and address class, an MCP tool's server); ToolError for
        invalid arguments."""
        tool = self._tools.get(name)
        facts = getattr(tool, "policy_facts", None)
        if tool is None or facts is None:
            return {}
        found: dict[str, Any] = await facts(tool.parse(arguments))
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
                "parameters": self._tools[name].parameters(),
            }
            for name in chosen
        ]

    async def call(
        self, name: str, arguments: dict[str, Any], caller: ToolCaller | None = None
    ) -> ToolOutput:
        """Run one call within the time limit; the text is cut to the size limit. Tools
        that keep tenant data (``needs_caller``) are run for ``caller`` and refuse
        without one. A ``tool.call`` span of the task's trace."""
        # Only registered names become label values: a made-up name is "unknown".
        label = name if name in self._tools else "unknown"
        with tracer().start_as_current_span("tool.call", attributes={"troupe.tool": label}) as span:
            output = await self._call(name, arguments, caller)
            span.set_attribute("troupe.tool.ok", output.ok)
        metrics.TOOL_CALLS.labels(tool=label, outcome="ok" if output.ok else "error").inc()
        metrics.TOOL_SECONDS.labels(tool=label).observe(output.seconds)
        return output

    async def _call(
        self, name: str, arguments: dict[str, Any], caller: ToolCaller | None
    ) -> ToolOutput:
        started = time.perf_counter()
        tool = self._tools.get(name)
        try:
            if tool is None:
                raise ToolError(f"no tool named {name!r}")
            parsed = tool.parse(arguments)
            async with asyncio.timeout(self._timeout_s):
                if getattr(tool, "needs_caller", False):
                    if caller is None:
                        raise ToolError(f"{name} answers only within a task")
                    output = await cast(CallerTool, tool).run_for(parsed, caller)
                else:
                    output = await tool.run(parsed)
        except InvalidInput as exc:
            output = ToolOutput(text=f"error: {exc.message}", ok=False, confidence=0)
        except TimeoutError:
            output = ToolOutput(
                text=f"error: {name} took longer than {self._timeout_s:g}s and was stopped",
                ok=False,
                confidence=0,
            )
        text = output.text
        if len(text) > self._max_result_chars:
            text = text[: self._max_result_chars] + "… [cut]"
        return replace(output, text=text, seconds=time.perf_counter() - started)
