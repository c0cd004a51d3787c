"""The shipped policy through the embedded engine: a regression table of real inputs,
hot reload, a broken file refused, and the Rego unit tests run like `opa test`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
import regorus

from troupe.domain import Actor
from troupe.errors import ConfigError
from troupe.policy.base import Action, Decision, input_digest
from troupe.policy.rego import RegoEngine, load_policy
from troupe.policy.rego_tests import run_tests

POLICIES = Path(__file__).parents[3] / "policies"
TROUPE = str(Path(sys.executable).parent / "troupe")

member = Actor(tenant_id="acme", plan="standard", user_id="alice", role="member")
free = Actor(tenant_id="tiny", plan="free", user_id="bob", role="member")
admin = Actor(tenant_id="acme", plan="standard", user_id="root", role="admin")


def _session(owner: str | None, operation: str = "read") -> dict[str, Any]:
    return {"operation": operation, "session": {"id": "s1", "tenant": "acme", "owner": owner}}


def _fetch(host: str, address_class: str = "public") -> dict[str, Any]:
    return {
        "tool": {"name": "http_fetch"},
        "argument_bytes": 40,
        "target": {"host": host, "address_class": address_class},
    }


# (action, actor, request, allow, require_approval, words in the reason)
TABLE: list[tuple[Action, Actor, dict[str, Any], bool, bool, str]] = [
    ("task.submit", member, {"strategy": "simple", "token_budget": 5000}, True, False, "within"),
    ("task.submit", member, {"strategy": "auto", "token_budget": 5000}, True, False, "within"),
    ("task.submit", free, {"strategy": "dag", "token_budget": 5000}, False, False, "'dag'"),
    ("task.submit", free, {"strategy": "simple", "token_budget": 20001}, False, False, "above"),
    (
        "task.submit",
        member,
        {"strategy": "dag", "token_budget": 5000, "require_approval": True},
        True,
        True,
        "asked for approval",
    ),
    (
        "task.submit",
        member,
        {"strategy": "dag", "token_budget": 5000, "plan": {"width": 9, "tools": []}},
        True,
        True,
        "9 agents",
    ),
    ("session.access", member, _session("alice"), True, False, "own session"),
    ("session.access", member, _session("carol"), False, False, "another user"),
    ("session.access", admin, _session("carol", "replay"), True, False, "admin"),
    ("session.access", member, _session(None, "write"), True, False, "shared"),
    ("tool.invoke", member, {"tool": {"name": "calculator"}, "argument_bytes": 9}, True, False, ""),
    ("tool.invoke", member, _fetch("docs.python.org"), True, False, "allowed"),
    ("tool.invoke", member, _fetch("169.254.169.254", "link_local"), False, False, "link_local"),
    ("tool.invoke", member, _fetch("attacker.test"), False, False, "allowlisted"),
    ("tool.invoke", free, _fetch("example.com"), False, False, "free plan"),
    ("model.use", free, {"tier": "large", "model": "sim-large"}, False, False, "large tier"),
    ("model.use", member, {"tier": "large", "model": "sim-large"}, True, False, "allowed"),
]


@pytest.fixture(scope="module")
def engine() -> RegoEngine:
    return RegoEngine(POLICIES)


@pytest.mark.parametrize(
    ("action", "actor", "request_", "allow", "approval", "words"),
    TABLE,
    ids=[f"{a}-{i}" for i, (a, *_rest) in enumerate(TABLE)],
)
async def test_the_policy_answers_real_inputs(
    engine: RegoEngine,
    action: Action,
    actor: Actor,
    request_: dict[str, Any],
    allow: bool,
    approval: bool,
    words: str,
) -> None:
    decision = await engine.decide(action, {**actor.facts(), "request": request_})
    assert (decision.allow, decision.require_approval) == (allow, approval), decision
    assert words in decision.reason
    assert decision.policy_version == engine.version


async def test_an_unknown_action_and_a_malformed_document_deny(engine: RegoEngine) -> None:
    unknown = await engine.decide("tenant.delete", admin.facts())  # type: ignore[arg-type]
    assert not unknown.allow
    assert Decision.of({"allow": "yes"}, "v").allow is False
    assert Decision.of(None, "v").reason == "the policy gave no decision for this input"


def test_the_input_digest_ignores_key_order() -> None:
    assert input_digest({"a": 1, "b": [1, 2]}) == input_digest({"b": [1, 2], "a": 1})
    assert input_digest({"a": 1}) != input_digest({"a": 2})


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    return copy


def _rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    # A new mtime even on a coarse clock: the reload looks at mtime and size.
    stamp = time.time() + 5
    os.utime(path, (stamp, stamp))


async def test_a_changed_policy_applies_to_the_next_decision(policy_copy: Path) -> None:
    engine = RegoEngine(policy_copy, reload_interval_s=0.01)
    request = {**free.facts(), "request": {"strategy": "dag", "token_budget": 100}}
    before = await engine.decide("task.submit", request)
    assert not before.allow
    _rewrite(
        policy_copy / "data.json",
        '"strategies": ["auto", "simple", "react"]',
        '"strategies": ["auto", "simple", "react", "dag"]',
    )
    time.sleep(0.02)
    after = await engine.decide("task.submit", request)
    assert after.allow
    assert after.policy_version != before.policy_version


async def test_a_broken_policy_is_refused_and_the_last_good_one_stays(
    policy_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = RegoEngine(policy_copy, reload_interval_s=0.01)
    version = engine.version
    _rewrite(policy_copy / "multiagent.rego", "decision := task_submit if", "decision := {{{ if")
    time.sleep(0.02)
    decision = await engine.decide(
        "model.use", {**member.facts(), "request": {"tier": "small", "model": "m"}}
    )
    assert decision.allow  # the old policy still decides
    assert decision.policy_version == version
    assert "policy change refused" in caplog.text
    assert "multiagent.rego" in caplog.text
    with pytest.raises(ConfigError, match="does not compile"):
        RegoEngine(policy_copy)  # and a fresh start refuses the broken file outright


def test_a_refused_policy_leaves_no_engine_reachable_from_its_error(tmp_path: Path) -> None:
    """A regorus Engine must be dropped on the thread that made it. One reachable from a
    raised error's tracebacks lives on in a reference cycle until the garbage collector
    drops it, on whatever thread runs it (a workflow's, say), and pyo3 refuses that."""
    (tmp_path / "broken.rego").write_text("package troupe\n\ndecision := {{{ if\n")
    with pytest.raises(ConfigError, match="does not compile") as caught:
        load_policy(tmp_path)
    held = [
        value
        for error in _chain(caught.value)
        for frame, _ in traceback.walk_tb(error.__traceback__)
        for value in frame.f_locals.values()
        if isinstance(value, regorus.Engine)
    ]
    assert held == []


def _chain(error: BaseException | None) -> list[BaseException]:
    """The error and every error it was raised from or during."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def test_the_rego_unit_tests_pass_and_there_are_at_least_forty() -> None:
    results = run_tests(POLICIES)
    assert len(results) >= 40
    failed = [r for r in results if r.outcome != "pass"]
    assert not failed, failed


def test_troupe_policy_test_reports_a_failing_rule(policy_copy: Path) -> None:
    # The data now lets a free tenant run a dag: the test that says it may not fails.
    _rewrite(
        policy_copy / "data.json",
        '"strategies": ["auto", "simple", "react"]',
        '"strategies": ["auto", "simple", "react", "dag"]',
    )
    done = subprocess.run(
        [TROUPE, "policy", "test", "--dir", str(policy_copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL: data.troupe.authz_test.test_submit_dag_on_free_plan_is_denied" in done.stdout
    ok = subprocess.run(
        [TROUPE, "policy", "test", "--dir", str(POLICIES), "-v"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS: data.troupe.authz_test.test_fetch_to_link_local_is_denied" in ok.stdout


def test_troupe_policy_test_refuses_a_file_that_does_not_compile(policy_copy: Path) -> None:
    (policy_copy / "broken_test.rego").write_text("package broken_test\n\ntest_x if {\n")
    done = subprocess.run(
        [TROUPE, "policy", "test", "--dir", str(policy_copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "broken_test.rego" in done.stderr
