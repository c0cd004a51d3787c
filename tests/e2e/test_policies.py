"""Policies through a real `troupe serve` on its own copy of policies/: refusals at
submit and on sessions, an agent's tool call denied mid-task, the policy changed while
serving, and the decision log."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import NO_MEMORY, REPO, TroupeProcess, new_tenant_key
from troupe.client import TroupeAPIError, TroupeClient

pytestmark = pytest.mark.e2e

CALCULATOR_TOOLS = '"tools": ["calculator", "python_exec", "http_fetch", "memory_search"]'
NO_CALCULATOR = '"tools": ["python_exec", "http_fetch", "memory_search"]'


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))  # every occurrence
    stamp = time.time() + 5  # a new mtime even on a coarse clock
    os.utime(path, (stamp, stamp))


@pytest.fixture(scope="module")
def policed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TroupeProcess]:
    data = tmp_path_factory.mktemp("policed")
    policies = data / "policies"
    shutil.copytree(REPO / "policies", policies)
    # Neither the standard plan nor members may use the calculator here.
    _edit(policies / "data.json", CALCULATOR_TOOLS, NO_CALCULATOR)
    env = {
        **NO_MEMORY,
        "TROUPE_DATA_DIR": str(data),
        "TROUPE_POLICY__DIR": str(policies),
        "TROUPE_POLICY__RELOAD_INTERVAL_S": "0.05",
    }
    process = TroupeProcess("serve", env=env, log=data / "serve.log").start()
    yield process
    assert process.stop() == 0, process.output()


def test_a_plan_that_forbids_the_strategy_refuses_the_submit(policed: TroupeProcess) -> None:
    key = new_tenant_key(policed, "on-free", "--plan", "free")
    with TroupeClient(policed.url, api_key=key) as client:
        with pytest.raises(TroupeAPIError) as refused:
            client.submit_task("Plan a trip", strategy="dag")
        allowed = client.submit_task("What is 2+2?", strategy="simple")
    assert (refused.value.status, refused.value.code) == (403, "policy_denied")
    assert "strategy 'dag' is not in the free plan" in refused.value.message
    assert allowed.status == "queued"


def test_a_denied_tool_call_ends_the_task_with_the_policys_reason(
    policed: TroupeProcess,
) -> None:
    with TroupeClient(policed.url, api_key=policed.api_key) as client:
        task = client.wait(client.submit_task("What is 17 * 23 + 4?", strategy="react").id)
        events = list(client.follow(task.id))
    assert task.status == "failed"
    assert task.error is not None
    assert task.error.code == "policy_denied"
    assert "tool 'calculator' is not in the standard plan" in task.error.message
    denied = [e for e in events if e.type == "policy.denied"]
    assert [e.data["action"] for e in denied] == ["tool.invoke"]
    assert "calculator" in str(denied[0].data["reason"])


def test_a_policy_changed_while_serving_decides_the_next_call(
    policed: TroupeProcess,
) -> None:
    data_json = Path(policed.env["TROUPE_POLICY__DIR"]) / "data.json"
    _edit(data_json, NO_CALCULATOR, CALCULATOR_TOOLS)  # the plan and members get it back
    try:
        time.sleep(0.2)
        with TroupeClient(policed.url, api_key=policed.api_key) as client:
            task = client.wait(client.submit_task("What is 6 * 7?", strategy="react").id)
        assert task.status == "completed", task.error
        # A file that does not compile leaves that policy in force, and says why.
        rego = data_json.parent / "multiagent.rego"
        good = rego.read_text()
        rego.write_text(good + "\nbroken := {{{\n")
        time.sleep(0.2)
        with TroupeClient(policed.url, api_key=policed.api_key) as client:
            again = client.wait(client.submit_task("What is 7 * 8?", strategy="react").id)
        assert again.status == "completed", again.error
        assert "policy change refused" in policed.output()
        rego.write_text(good)
    finally:
        _edit(data_json, CALCULATOR_TOOLS, NO_CALCULATOR)
        time.sleep(0.2)


def test_a_users_session_is_theirs_unless_an_admin_asks(policed: TroupeProcess) -> None:
    alice = new_tenant_key(policed, "sessions", key_options=("--user", "alice"))
    bob = new_tenant_key(policed, "sessions", key_options=("--user", "bob"))
    boss = new_tenant_key(policed, "sessions", key_options=("--user", "boss", "--role", "admin"))
    with TroupeClient(policed.url, api_key=alice) as client:
        first = client.wait(client.submit_task("Hello", strategy="simple", session_id="a1").id)
    with TroupeClient(policed.url, api_key=bob) as client:
        refusals = []
        with pytest.raises(TroupeAPIError) as refused:
            client.submit_task("Me too", strategy="simple", session_id="a1")
        refusals.append(refused.value)
        with pytest.raises(TroupeAPIError) as refused:
            client.get_task(first.id)
        refusals.append(refused.value)
        with pytest.raises(TroupeAPIError) as refused:
            client.list_tasks(session_id="a1")
        refusals.append(refused.value)
        for refusal in refusals:
            assert (refusal.status, refusal.code) == (403, "policy_denied")
            assert "another user" in refusal.message
        with pytest.raises(TroupeAPIError):
            list(client.follow(first.id))
    with TroupeClient(policed.url, api_key=boss) as client:
        assert client.get_task(first.id).status == "completed"
        assert [t.id for t in client.list_tasks(session_id="a1").items] == [first.id]


def test_the_decision_log_is_for_admins(policed: TroupeProcess) -> None:
    member = new_tenant_key(policed, "audited", key_options=("--user", "m"))
    admin = new_tenant_key(policed, "audited", key_options=("--role", "admin"))
    with TroupeClient(policed.url, api_key=member) as client, pytest.raises(TroupeAPIError):
        client.submit_task("x", strategy="simple", token_budget=300_000)  # above the plan
    url = f"{policed.url}/api/v1/policy/decisions"
    as_member = httpx.get(url, headers={"Authorization": f"Bearer {member}"})
    as_admin = httpx.get(
        url, params={"allowed": "false"}, headers={"Authorization": f"Bearer {admin}"}
    )
    assert as_member.status_code == 403
    assert as_member.json()["error"]["code"] == "admin_only"
    assert as_admin.status_code == 200
    (denial,) = as_admin.json()["items"]
    assert denial["action"] == "task.submit"
    assert "token_budget 300000 is above" in denial["reason"]
    assert denial["user_id"] is not None
    assert len(denial["input_digest"]) == 64
