"""Bad input gets a 4xx JSON error with a stable code, never a 500, and changes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.processes import TroupeProcess

pytestmark = pytest.mark.e2e

UNKNOWN = "tsk_" + "0" * 24
TASKS = "/api/v1/tasks"

# (method, path, request kwargs, expected status, expected code)
CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    (
        "POST",
        TASKS,
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        400,
        "malformed_json",
    ),
    ("POST", TASKS, {"json": []}, 422, "invalid_request"),
    ("POST", TASKS, {"json": "just a string"}, 422, "invalid_request"),
    ("POST", TASKS, {"json": {}}, 422, "invalid_request"),
    ("POST", TASKS, {"json": {"query": ""}}, 422, "invalid_request"),
    ("POST", TASKS, {"json": {"query": "   \n"}}, 422, "query_blank"),
    ("POST", TASKS, {"json": {"query": "x" * 8001}}, 422, "query_too_long"),
    ("POST", TASKS, {"json": {"query": "x" * 70_000}}, 413, "payload_too_large"),
    ("POST", TASKS, {"json": {"query": "hi", "colour": "red"}}, 422, "invalid_request"),
    ("POST", TASKS, {"json": {"query": 42}}, 422, "invalid_request"),
    ("POST", TASKS, {"json": {"query": "hi", "token_budget": "lots"}}, 422, "invalid_request"),
    ("POST", TASKS, {"json": {"query": "hi", "token_budget": 0}}, 422, "invalid_request"),
    ("POST", TASKS, {"json": {"query": "hi", "token_budget": -5}}, 422, "invalid_request"),
    ("POST", TASKS, {"json": {"query": "hi", "token_budget": 10**7}}, 422, "budget_too_large"),
    ("POST", TASKS, {"json": {"query": "hi", "session_id": "../etc"}}, 422, "invalid_request"),
    ("POST", TASKS, {"json": {"query": "hi", "strategy": "telepathy"}}, 422, "invalid_request"),
    (
        "POST",
        TASKS,
        {"content": b"query=hi", "headers": {"content-type": "text/plain"}},
        422,
        "invalid_request",
    ),
    ("GET", f"{TASKS}/not-a-task-id", {}, 404, "task_not_found"),
    ("GET", f"{TASKS}/{UNKNOWN}", {}, 404, "task_not_found"),
    ("GET", f"{TASKS}/{'x' * 5000}", {}, 404, "task_not_found"),
    ("GET", f"{TASKS}/{UNKNOWN}", {"params": {"wait_s": 30}}, 404, "task_not_found"),
    ("GET", f"{TASKS}/{UNKNOWN}", {"params": {"wait_s": -1}}, 422, "invalid_request"),
    ("GET", f"{TASKS}/{UNKNOWN}", {"params": {"wait_s": 61}}, 422, "invalid_request"),
    ("GET", f"{TASKS}/{UNKNOWN}", {"params": {"wait_s": "soon"}}, 422, "invalid_request"),
    ("GET", f"{TASKS}/{UNKNOWN}", {"params": {"wait_s": "nan"}}, 422, "invalid_request"),
    ("GET", f"{TASKS}/{UNKNOWN}/events", {}, 404, "task_not_found"),
    ("GET", f"{TASKS}/bad%00id/events", {}, 404, "task_not_found"),
    ("POST", f"{TASKS}/{UNKNOWN}/cancel", {}, 404, "task_not_found"),
    ("POST", f"{TASKS}/{UNKNOWN}/approve", {}, 404, "task_not_found"),
    ("POST", f"{TASKS}/{UNKNOWN}/reject", {"json": {}}, 422, "invalid_request"),
    (
        "POST",
        f"{TASKS}/{UNKNOWN}/reject",
        {"json": {"reason": "x", "y": 1}},
        422,
        "invalid_request",
    ),
    ("POST", f"{TASKS}/{UNKNOWN}/reject", {"json": {"reason": "no"}}, 404, "task_not_found"),
    ("POST", TASKS, {"json": {"query": "hi", "require_approval": "maybe"}}, 422, "invalid_request"),
    ("GET", TASKS, {"params": {"limit": 0}}, 422, "invalid_request"),
    ("GET", TASKS, {"params": {"limit": 1000}}, 422, "invalid_request"),
    ("GET", TASKS, {"params": {"cursor": "abc"}}, 422, "invalid_request"),
    ("GET", TASKS, {"params": {"status": "exploded"}}, 422, "invalid_request"),
    ("GET", TASKS, {"params": {"session_id": "a b"}}, 422, "invalid_request"),
    ("GET", "/api/v1/nothing-here", {}, 404, "not_found"),
    ("DELETE", TASKS, {}, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    CASES,
    ids=[f"{m} {p[:40]} {c}-{i}" for i, (m, p, _, _, c) in enumerate(CASES)],
)
def test_bad_request_gets_a_json_error_with_a_stable_code(
    served: TroupeProcess, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    kwargs = {**kwargs, "headers": {**kwargs.get("headers", {}), **served.auth}}
    response = httpx.request(method, served.url + path, timeout=10, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


def test_a_bad_last_event_id_is_refused(served: TroupeProcess) -> None:
    with httpx.Client(base_url=served.url, headers=served.auth) as http:
        task = http.post(TASKS, json={"query": "ok"}).json()
        response = http.get(
            f"{TASKS}/{task['id']}/events", headers={"Last-Event-ID": "not-a-number"}
        )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


def test_rejected_submissions_create_no_task(served: TroupeProcess) -> None:
    with httpx.Client(base_url=served.url, headers=served.auth) as http:
        before = len(http.get(TASKS, params={"limit": 200}).json()["items"])
        for _, path, kwargs, _, _ in CASES:
            if path == TASKS and "json" in kwargs:
                http.post(TASKS, **kwargs)
        after = len(http.get(TASKS, params={"limit": 200}).json()["items"])
    assert after == before
