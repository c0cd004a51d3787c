"""MCP servers' tools in the registry: a real server (tests/fixtures/mcp_server.py,
written with the mcp SDK) over stdio and over streamable HTTP on loopback."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from troupe.config import McpServerSettings
from troupe.errors import ConfigError
from troupe.orchestrator.devserver import free_port
from troupe.tools.base import ToolRegistry
from troupe.tools.mcp import McpServers

pytestmark = pytest.mark.integration

SERVER = Path(__file__).parents[2] / "fixtures" / "mcp_server.py"


def stdio(**extra: Any) -> McpServerSettings:
    return McpServerSettings(
        name="facts", transport="stdio", command=sys.executable, args=(str(SERVER),), **extra
    )


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SERVER), "http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert process.poll() is None, "the MCP server exited"
            subprocess.run(["sleep", "0.05"], check=True)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


async def _registry(*servers: McpServerSettings) -> AsyncIterator[ToolRegistry]:
    mcp = McpServers(servers)
    registry = ToolRegistry(await mcp.connect())
    try:
        yield registry
    finally:
        await mcp.aclose()


@pytest.fixture
async def over_stdio() -> AsyncIterator[ToolRegistry]:
    async for registry in _registry(stdio()):
        yield registry


async def test_a_stdio_servers_tools_are_namespaced_and_described(
    over_stdio: ToolRegistry,
) -> None:
    assert over_stdio.names() == ["facts__add", "facts__crash", "facts__fail", "facts__lookup"]
    described = {d["name"]: d for d in over_stdio.describe(["facts__add"])}
    assert described["facts__add"]["description"] == "[facts] Add two integers."
    assert described["facts__add"]["parameters"]["required"] == ["a", "b"]


async def test_a_call_returns_the_servers_answer_with_its_confidence(
    over_stdio: ToolRegistry,
) -> None:
    output = await over_stdio.call("facts__add", {"a": 2, "b": 40})
    assert (output.text, output.ok, output.confidence) == ("42", True, 0.7)
    assert output.seconds > 0


async def test_the_servers_refusals_are_failed_outputs(over_stdio: ToolRegistry) -> None:
    bad = await over_stdio.call("facts__add", {"a": "x"})
    assert not bad.ok
    assert bad.text.startswith("error: ")
    assert "validation error" in bad.text
    failed = await over_stdio.call("facts__fail", {"reason": "no such record"})
    assert not failed.ok
    assert "no such record" in failed.text


async def test_a_dead_server_fails_one_call_and_is_reconnected_for_the_next(
    over_stdio: ToolRegistry,
) -> None:
    crashed = await over_stdio.call("facts__crash", {})
    assert not crashed.ok
    assert "MCP server 'facts' failed" in crashed.text
    again = await over_stdio.call("facts__lookup", {"topic": "troupe"})
    assert (again.ok, again.text) == (True, "fact about troupe: 42")


async def test_policy_facts_name_the_server_and_its_tool(over_stdio: ToolRegistry) -> None:
    facts = await over_stdio.policy_facts("facts__lookup", {"topic": "x"})
    assert facts == {"mcp": {"server": "facts", "tool": "lookup"}}


async def test_include_keeps_only_the_listed_tools_and_tenants_narrow_visibility() -> None:
    async for registry in _registry(stdio(include=("lookup",), tenants=("acme",))):
        assert registry.names() == ["facts__lookup"]
        assert registry.names("acme") == ["facts__lookup"]
        assert registry.names("other") == []


async def test_a_missing_included_tool_stops_the_start() -> None:
    with pytest.raises(ConfigError, match=r"has no tools named \['search'\]"):
        async for _ in _registry(stdio(include=("search",))):
            pass


async def test_an_unreachable_server_stops_the_start_with_its_name() -> None:
    broken = McpServerSettings(
        name="gone",
        transport="stdio",
        command=sys.executable,
        args=("-c", "import sys; sys.exit(1)"),
    )
    with pytest.raises(ConfigError, match="MCP server 'gone'"):
        async for _ in _registry(broken):
            pass


async def test_an_http_server_over_loopback(http_server: str) -> None:
    settings = McpServerSettings(
        name="web-facts",
        transport="http",
        url=http_server,
        headers={"X-Troupe-Test": "1"},
        confidence=0.4,
    )
    async for registry in _registry(settings):
        assert "web-facts__lookup" in registry.names()
        results = await asyncio.gather(
            *(registry.call("web-facts__add", {"a": n, "b": n}) for n in range(5))
        )
        assert [r.text for r in results] == ["0", "2", "4", "6", "8"]
        assert {r.confidence for r in results} == {0.4}


def test_settings_need_their_transports_target() -> None:
    with pytest.raises(ValueError, match="stdio needs a command"):
        McpServerSettings(name="x", transport="stdio")
    with pytest.raises(ValueError, match="http needs a url"):
        McpServerSettings(name="x", transport="http")
    with pytest.raises(ValueError, match="name"):
        McpServerSettings(name="bad__name", transport="http", url="http://127.0.0.1:1/mcp")
