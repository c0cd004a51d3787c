"""`troupe serve` end to end over HTTP: submit, stream, result, usage, cancel, crash."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.processes import NO_MEMORY, TroupeProcess
from troupe.client import TroupeAPIError, TroupeClient

pytestmark = pytest.mark.e2e


def test_a_task_runs_to_completion_and_its_stream_tells_the_story(client: TroupeClient) -> None:
    accepted = client.submit_task("Name three uses of a DAG", token_budget=4000)
    assert accepted.status == "queued"
    assert accepted.links.events == f"/api/v1/tasks/{accepted.id}/events"

    events = list(client.follow(accepted.id))
    assert [e.type for e in events] == [
        "task.submitted",
        "task.started",
        "llm.call",
        "task.completed",
    ]
    assert [e.seq for e in events] == [1, 2, 3, 4]

    task = client.get_task(accepted.id)
    assert task.status == "completed"
    assert task.result is not None
    assert "Name three uses of a DAG" in task.result
    call = events[2].data
    assert task.usage.prompt_tokens == call["prompt_tokens"]
    assert task.usage.completion_tokens == call["completion_tokens"]
    assert task.usage.cost_micro_usd == call["cost_micro_usd"]
    assert min(task.usage.prompt_tokens, task.usage.completion_tokens) > 0
    assert task.usage.cost_micro_usd > 0
    assert task.usage.total_tokens <= 4000


def test_the_stream_resumes_after_last_event_id(client: TroupeClient) -> None:
    task = client.submit_task("resume me")
    client.wait(task.id)
    resumed = list(client.follow(task.id, after=2))
    assert [e.seq for e in resumed] == [3, 4]
    # Resuming after the end returns at once with nothing, rather than hanging.
    assert list(client.follow(task.id, after=4)) == []


def test_listing_filters_by_session_and_status(client: TroupeClient) -> None:
    first = client.submit_task("first turn", session_id="e2e-chat")
    second = client.submit_task("second turn", session_id="e2e-chat")
    client.wait(first.id)
    client.wait(second.id)
    page = client.list_tasks(session_id="e2e-chat")
    assert [t.id for t in page.items] == [second.id, first.id]
    completed = client.list_tasks(status="completed", limit=200)
    assert {first.id, second.id} <= {t.id for t in completed.items}
    one = client.list_tasks(session_id="e2e-chat", limit=1)
    assert one.next_cursor is not None
    rest = client.list_tasks(session_id="e2e-chat", limit=1, cursor=one.next_cursor)
    assert [t.id for t in rest.items] == [first.id]


def test_cancelling_an_ended_task_is_a_conflict(client: TroupeClient) -> None:
    task = client.wait(client.submit_task("quick").id)
    with pytest.raises(TroupeAPIError) as caught:
        client.cancel_task(task.id)
    assert (caught.value.status, caught.value.code) == (409, "task_ended")


def test_metrics_count_requests_and_task_outcomes(
    client: TroupeClient, served: TroupeProcess
) -> None:
    client.wait(client.submit_task("count me").id)
    text = httpx.get(f"{served.url}/metrics").text
    assert 'troupe_tasks_finished_total{status="completed",strategy="simple"}' in text
    assert 'troupe_tasks_submitted_total{strategy="simple"}' in text
    assert 'route="/api/v1/tasks/{task_id}"' in text  # the template, never a raw id
    assert "tsk_" not in text
    tokens = 'troupe_llm_tokens_total{kind="prompt",model="sim-small",provider="simulation"'
    assert f'{tokens},tenant="local"}}' in text


def test_health_readiness_and_openapi(served: TroupeProcess) -> None:
    assert httpx.get(f"{served.url}/healthz").json() == {"status": "ok", "checks": {}}
    ready = httpx.get(f"{served.url}/readyz").json()
    assert ready == {
        "status": "ready",
        "checks": {"database": "ok", "temporal": "ok", "events": "ok"},
    }
    schema = httpx.get(f"{served.url}/openapi.json").json()
    assert "/api/v1/tasks/{task_id}/events" in schema["paths"]
    assert schema["components"]["schemas"]["TaskCreate"]["examples"]


@pytest.fixture
def slow_serve(tmp_path: Path) -> TroupeProcess:
    """A serve whose simulated provider takes 3 s, so tasks can be caught mid-flight."""
    return TroupeProcess(
        "serve",
        env={
            "TROUPE_DATA_DIR": str(tmp_path / "data"),
            "TROUPE_LLM__SIMULATION__LATENCY_MS": "3000",
            "TROUPE_TASKS__HEARTBEAT_TIMEOUT_S": "1",
            # A cancel reaches a running local step within 0.8 of this; a dead serve's
            # task is taken over after it.
            "TROUPE_TASKS__WORKFLOW_TASK_TIMEOUT_S": "1",
            **NO_MEMORY,  # not the subject here; ~1.4 s less per start
        },
        log=tmp_path / "serve.log",
    )


def _until_status(client: TroupeClient, task_id: str, status: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get_task(task_id).status != status:
        assert time.monotonic() < deadline, f"task never became {status}"
        time.sleep(0.05)


def test_a_long_poll_answers_when_the_task_ends_or_when_it_is_told(
    client: TroupeClient,
) -> None:
    waiting = client.submit_task("Hold on", require_approval=True)
    _until_status(client, waiting.id, "awaiting_approval")
    began = time.monotonic()
    assert client.get_task(waiting.id, wait_s=0.6).status == "awaiting_approval"
    assert time.monotonic() - began >= 0.55  # it waited, then answered as things were
    client.approve_task(waiting.id)
    began = time.monotonic()
    ended = client.get_task(waiting.id, wait_s=30)
    # The end, long before the 30 s (the poll interval is 0.5 s: a notification it was).
    assert ended.status == "completed"
    assert ended.result
    assert time.monotonic() - began < 10


def test_a_slow_task_is_cancelled(slow_serve: TroupeProcess) -> None:
    slow_serve.start()
    try:
        with TroupeClient(slow_serve.url, api_key=slow_serve.api_key) as client:
            task = client.submit_task("take your time")
            _until_status(client, task.id, "running")
            began = time.monotonic()
            client.cancel_task(task.id)
            ended = client.wait(task.id)
            assert ended.status == "cancelled"
            assert time.monotonic() - began < 2.5  # sooner than the 3 s call would end
            assert ended.result is None
    finally:
        assert slow_serve.stop() == 0, slow_serve.output()


def test_a_crashed_serve_loses_no_task_and_leaves_no_orphan(slow_serve: TroupeProcess) -> None:
    slow_serve.start()
    with TroupeClient(slow_serve.url, api_key=slow_serve.api_key) as client:
        task = client.submit_task("survive a crash")
        _until_status(client, task.id, "running")
    children = psutil.Process(slow_serve.pid).children(recursive=True)
    assert children, "the embedded Temporal server should be a child of serve"

    slow_serve.kill()
    _, alive = psutil.wait_procs(children, timeout=15)
    assert alive == [], "the embedded Temporal server outlived its parent"

    slow_serve.start()  # same data dir and port: the workflow resumes
    try:
        with TroupeClient(slow_serve.url, api_key=slow_serve.api_key) as client:
            ended = client.wait(task.id)
            assert ended.status == "completed"
            assert ended.result
            starts = [e for e in client.follow(task.id) if e.type == "task.started"]
            assert len(starts) >= 2  # the interrupted attempt was retried
    finally:
        assert slow_serve.stop() == 0, slow_serve.output()


def test_a_dag_task_streams_its_plan_and_nodes_and_reports_each_node(
    client: TroupeClient,
) -> None:
    task = client.submit_task("Compare three databases for a chat app", strategy="dag")
    events = list(client.follow(task.id))
    types = [e.type for e in events]
    assert types[:3] == ["task.submitted", "task.started", "llm.call"]  # the planner's call
    assert "plan.created" in types
    assert types.count("node.started") == types.count("node.completed") == 3
    assert types[-1] == "task.completed"

    final = client.get_task(task.id)
    assert final.strategy == "dag"
    assert final.plan is not None
    assert [n.node_id for n in final.nodes] == [n.id for n in final.plan.nodes]
    assert all(n.status == "completed" and n.output for n in final.nodes)
    node_tokens = sum(n.usage.total_tokens for n in final.nodes)
    assert 0 < node_tokens < final.usage.total_tokens  # planner and synthesis cost too


def test_approval_over_http(client: TroupeClient) -> None:
    waiting = client.submit_task("Needs a yes first", require_approval=True)
    _until_status(client, waiting.id, "awaiting_approval")
    client.approve_task(waiting.id, reason="fine by me")
    assert client.wait(waiting.id).status == "completed"

    refused = client.submit_task("Needs a yes too", require_approval=True)
    _until_status(client, refused.id, "awaiting_approval")
    client.reject_task(refused.id, reason="not today")
    ended = client.wait(refused.id)
    assert ended.status == "rejected"
    assert ended.error is not None
    assert ended.error.message == "not today"

    with pytest.raises(TroupeAPIError) as caught:
        client.approve_task(refused.id)
    assert (caught.value.status, caught.value.code) == (409, "not_awaiting_approval")


def test_a_dag_survives_a_crash_mid_nodes_without_counting_any_node_twice(
    tmp_path: Path,
) -> None:
    serve = TroupeProcess(
        "serve",
        env={
            "TROUPE_DATA_DIR": str(tmp_path / "data"),
            "TROUPE_LLM__SIMULATION__LATENCY_MS": "1500",
            "TROUPE_TASKS__HEARTBEAT_TIMEOUT_S": "1",
            # A cancel reaches a running local step within 0.8 of this; a dead serve's
            # task is taken over after it.
            "TROUPE_TASKS__WORKFLOW_TASK_TIMEOUT_S": "1",
            **NO_MEMORY,  # not the subject here; ~1.4 s less per start
        },
        log=tmp_path / "serve.log",
    )
    serve.start()
    with TroupeClient(serve.url, api_key=serve.api_key) as client:
        task = client.submit_task("survive a crash in the middle", strategy="dag")
        deadline = time.monotonic() + 30
        # The simulated plan's nodes are independent: all start at once, and each call
        # takes 1.5 s. Kill when every one has started (they start one after another).
        while not (nodes := client.get_task(task.id).nodes) or any(
            n.status != "running" for n in nodes
        ):
            assert time.monotonic() < deadline, "the nodes never all started"
            time.sleep(0.05)
    serve.kill()  # mid-nodes: their calls are in flight, nothing of theirs is recorded
    serve.start()
    try:
        with TroupeClient(serve.url, api_key=serve.api_key) as client:
            ended = client.wait(task.id)
            assert ended.status == "completed", ended.error
            final = client.get_task(task.id)
            events = list(client.follow(task.id))
        completed = [str(e.data["node_id"]) for e in events if e.type == "node.completed"]
        assert sorted(completed) == sorted(n.node_id for n in final.nodes)  # once each
        assert all(n.attempts >= 2 for n in final.nodes)  # the crashed attempts were retried
        calls = [e for e in events if e.type == "llm.call"]
        node_calls = [e for e in calls if e.data["node_id"] is not None]
        assert len(node_calls) == len(final.nodes)
        recorded = sum(
            int(str(e.data["prompt_tokens"])) + int(str(e.data["completion_tokens"])) for e in calls
        )
        assert final.usage.total_tokens == recorded
    finally:
        assert serve.stop() == 0, serve.output()
