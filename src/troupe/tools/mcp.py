"""MCP servers' tools in the registry, named ``<server>__<tool>``.

Each configured server gets one long-lived connection (the ``mcp`` SDK's ``Client``,
over stdio or streamable HTTP), opened when the worker starts: its tools are listed
then, and a server that cannot be reached stops the start with its name and why.
The SDK's transports are anyio task groups that must be entered and left by the same
task, so each connection lives in a task of its own and calls are sent from the
agents' tasks. A dropped connection is reopened for the next call; a call is never
re-sent (a tool may have side effects), its failure is what the agent reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from mcp import Client
from mcp.client._transport import Transport
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CallToolResult, TextContent
from mcp_types import Tool as McpToolInfo

from troupe.config import McpServerSettings
from troupe.errors import ConfigError
from troupe.tools.base import ToolError, ToolOutput

logger = logging.getLogger(__name__)

SEPARATOR = "__"


class McpConnection:
    """One server: connect, list its tools, call them, reconnect after a drop."""

    def __init__(self, settings: McpServerSettings) -> None:
        self.settings = settings
        self._client: Client | None = None
        self._serving: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.settings.name

    async def connect(self) -> list[McpToolInfo]:
        """Open the connection and list the server's tools (those ``include`` keeps)."""
        client = await self._ensure()
        listed = (await client.list_tools()).tools
        keep = self.settings.include
        missing = sorted(set(keep) - {t.name for t in listed})
        if missing:
            raise ConfigError(f"MCP server {self.name!r} has no tools named {missing}")
        return [t for t in listed if not keep or t.name in keep]

    async def call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        client = await self._ensure()
        try:
            return await client.call_tool(tool, arguments)
        except Exception as exc:
            # The transport or the session broke; the next call opens a new one.
            await self._drop()
            raise ToolError(f"MCP server {self.name!r} failed: {exc}") from exc

    async def _ensure(self) -> Client:
        async with self._lock:
            serving = self._serving
            if self._client is not None and serving is not None and not serving.done():
                return self._client
            ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
            self._closing = asyncio.Event()
            self._serving = asyncio.create_task(self._serve(ready), name=f"mcp-{self.name}")
            try:
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    self._client = await ready
            except TimeoutError as exc:
                await self._drop()
                raise ToolError(
                    f"MCP server {self.name!r} did not answer within "
                    f"{self.settings.connect_timeout_s:g}s"
                ) from exc
            except Exception as exc:
                await self._drop()
                raise ToolError(f"MCP server {self.name!r} cannot be reached: {exc}") from exc
            return self._client

    async def _serve(self, ready: asyncio.Future[Client]) -> None:
        """Hold the connection open, in this one task, until it is closed."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                target = await _target(self.settings, stack)
                client = await stack.enter_async_context(Client(target, raise_exceptions=True))
                ready.set_result(client)
                await self._closing.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                logger.warning("MCP server %s disconnected: %s", self.name, exc)

    async def _drop(self) -> None:
        self._client = None
        serving, self._serving = self._serving, None
        if serving is None:
            return
        self._closing.set()
        try:
            async with asyncio.timeout(5):
                await serving
        except TimeoutError:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving

    async def aclose(self) -> None:
        async with self._lock:
            await self._drop()


class McpTool:
    """One tool of an MCP server, as the registry and the policy see it.

    The server validates the arguments against the schema it published; its refusal
    comes back as a failed output the agent reads.
    """

    sandboxed = False

    def __init__(self, connection: McpConnection, info: McpToolInfo) -> None:
        self._connection = connection
        self._remote = info.name
        self.name = f"{connection.name}{SEPARATOR}{info.name}"
        self.description = f"[{connection.name}] {info.description or info.name}"
        self._schema = dict(info.input_schema)
        self.tenants = frozenset(connection.settings.tenants)

    def parameters(self) -> dict[str, Any]:
        return self._schema

    def parse(self, arguments: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(arguments, dict):
            raise ToolError(f"arguments of {self.name} must be an object")
        return arguments

    async def policy_facts(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return {"mcp": {"server": self._connection.name, "tool": self._remote}}

    async def run(self, arguments: dict[str, Any]) -> ToolOutput:
        result = await self._connection.call(self._remote, arguments)
        text = "\n".join(
            c.text if isinstance(c, TextContent) else f"[{c.type} content]" for c in result.content
        )
        if result.is_error:
            return ToolOutput(text=f"error: {text}", ok=False, confidence=0)
        return ToolOutput(text=text, confidence=self._connection.settings.confidence)


class McpServers:
    """The connections of a worker, opened together and closed together."""

    def __init__(self, settings: tuple[McpServerSettings, ...]) -> None:
        self._connections = [McpConnection(s) for s in settings]
        self.tools: list[McpTool] = []

    async def connect(self) -> list[McpTool]:
        """Connect every server (at once) and collect their tools."""
        try:
            listings = await asyncio.gather(*(c.connect() for c in self._connections))
        except ToolError as exc:
            await self.aclose()
            raise ConfigError(exc.message) from exc
        self.tools = [
            McpTool(connection, info)
            for connection, infos in zip(self._connections, listings, strict=True)
            for info in infos
        ]
        return self.tools

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self._connections))


async def _target(
    settings: McpServerSettings, stack: contextlib.AsyncExitStack
) -> StdioServerParameters | str | Transport:
    """What the SDK's Client connects to; an HTTP client with the server's headers is
    entered on ``stack`` so it closes with the connection."""
    if settings.transport == "stdio":
        assert settings.command is not None  # the settings validate this
        return StdioServerParameters(
            command=settings.command,
            args=list(settings.args),
            env=dict(settings.env) or None,
            cwd=settings.cwd,
        )
    assert settings.url is not None
    if not settings.headers:
        return settings.url
    http = await stack.enter_async_context(create_mcp_http_client(headers=dict(settings.headers)))
    return streamable_http_client(settings.url, http_client=http)
