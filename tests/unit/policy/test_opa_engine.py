"""The remote engine against a local server that speaks OPA's Data API: it evaluates
the shipped policy, as an OPA server loaded with policies/ would."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import regorus

from troupe.domain import Actor
from troupe.orchestrator.devserver import free_port
from troupe.policy.opa import OpaHttpEngine
from troupe.policy.rego import RegoEngine

POLICIES = Path(__file__).parents[3] / "policies"


class FakeOpa(BaseHTTPRequestHandler):
    """POST /v1/data/<path> {"input": ...} → {"result": ...} (no result: undefined)."""

    seen: list[tuple[str, dict[str, Any]]] = []  # noqa: RUF012 - shared by the server's threads
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpa.seen.append((self.path, body))
        rule = "data." + self.path.removeprefix("/v1/data/").replace("/", ".")
        engine = regorus.Engine()
        engine.add_policy("multiagent.rego", (POLICIES / "multiagent.rego").read_text())
        engine.add_data_json((POLICIES / "data.json").read_text())
        with FakeOpa.lock:
            engine.set_input_json(json.dumps(body["input"]))
            result = engine.eval_rule(rule)
        answer = {"result": result} if result is not None else {}
        if body["input"].get("action") == "undefined.please":
            answer = {}
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def opa_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), FakeOpa)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


member = Actor(tenant_id="acme", plan="standard", user_id="alice")
free = Actor(tenant_id="tiny", plan="free", user_id="bob")

CASES: list[tuple[str, Actor, dict[str, Any]]] = [
    ("task.submit", member, {"strategy": "dag", "token_budget": 1000}),
    ("task.submit", free, {"strategy": "dag", "token_budget": 1000}),
    ("model.use", free, {"tier": "large", "model": "sim-large"}),
    ("tool.invoke", member, {"tool": {"name": "calculator"}, "argument_bytes": 3}),
]


async def test_the_remote_engine_decides_as_the_embedded_one(opa_url: str) -> None:
    remote, local = OpaHttpEngine(opa_url), RegoEngine(POLICIES)
    try:
        for action, actor, request in CASES:
            document = {**actor.facts(), "request": request}
            there = await remote.decide(action, document)  # type: ignore[arg-type]
            here = await local.decide(action, document)  # type: ignore[arg-type]
            assert (there.allow, there.reason, there.require_approval) == (
                here.allow,
                here.reason,
                here.require_approval,
            )
    finally:
        await remote.aclose()
    path, body = FakeOpa.seen[0]
    assert path == "/v1/data/troupe/authz/decision"
    assert body["input"]["action"] == "task.submit"
    assert body["input"]["tenant"] == {"id": "acme", "status": "active", "plan": "standard"}


async def test_an_undefined_result_denies(opa_url: str) -> None:
    remote = OpaHttpEngine(opa_url)
    try:
        decision = await remote.decide("undefined.please", member.facts())  # type: ignore[arg-type]
    finally:
        await remote.aclose()
    assert not decision.allow
    assert "no decision" in decision.reason


async def test_an_unreachable_server_denies() -> None:
    remote = OpaHttpEngine(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    try:
        decision = await remote.decide("task.submit", member.facts())
    finally:
        await remote.aclose()
    assert not decision.allow
    assert decision.reason == "the policy server could not be asked"
