"""An MCP server's tools through a real `troupe serve`: a react agent uses one, the
task's detail shows the call and what the agent now believes, and a tenant whose plan
does not list the server's tools is stopped by the policy."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.processes import NO_MEMORY, TroupeProcess, new_tenant_key
from troupe.client import TroupeClient

pytestmark = pytest.mark.e2e

SERVER = Path(__file__).parents[1] / "fixtures" / "mcp_server.py"
QUERY = 'What do we know about troupe? [[facts__lookup {"topic": "troupe"}]]'


@pytest.fixture(scope="module")
def with_mcp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TroupeProcess]:
    data = tmp_path_factory.mktemp("mcp")
    servers = [
        {"name": "facts", "transport": "stdio", "command": sys.executable, "args": [str(SERVER)]}
    ]
    env = {
        **NO_MEMORY,
        "TROUPE_DATA_DIR": str(data),
        "TROUPE_TOOLS__MCP_SERVERS": json.dumps(servers),
        "TROUPE_ORCHESTRATOR__REACT_TOOLS": json.dumps(["calculator", "facts__*"]),
    }
    process = TroupeProcess("serve", env=env, log=data / "serve.log").start()
    yield process
    assert process.stop() == 0, process.output()


def test_an_agent_uses_an_mcp_tool_and_rests_its_answer_on_it(with_mcp: TroupeProcess) -> None:
    key = new_tenant_key(
        with_mcp, "mcp-enterprise", "--plan", "enterprise", key_options=("--role", "admin")
    )
    with TroupeClient(with_mcp.url, api_key=key) as client:
        task = client.wait(client.submit_task(QUERY, strategy="react").id)
        detail = client.get_task(task.id)
    assert task.status == "completed", task.error
    assert task.result is not None
    assert "fact about troupe: 42" in task.result
    called = [c for step in detail.steps for c in step.calls if c.tool == "facts__lookup"]
    assert [(c.ok, c.observation) for c in called] == [(True, "fact about troupe: 42")]
    assert detail.beliefs is not None
    (fact,) = detail.beliefs.facts
    assert (fact.source, fact.confidence) == ("step 1: facts__lookup", 0.7)
    assert detail.beliefs.plan == ("use facts__lookup", "answer")


def test_a_plan_without_the_servers_tools_is_denied_by_policy(with_mcp: TroupeProcess) -> None:
    key = new_tenant_key(with_mcp, "mcp-standard", "--plan", "standard")
    with TroupeClient(with_mcp.url, api_key=key) as client:
        task = client.wait(client.submit_task(QUERY, strategy="react").id)
        detail = client.get_task(task.id)
    assert task.status == "failed"
    assert task.error is not None
    assert task.error.code == "policy_denied"
    assert "tool 'facts__lookup' is not in the standard plan" in task.error.message
    assert [c.tool for s in detail.steps for c in s.calls] == []  # the call never ran
