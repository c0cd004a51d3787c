"""One trace per task: the HTTP request that submits it, the workflow, its activities,
the LLM call, the tool call and the sandbox run form one tree, and the task shows the
trace's id. The whole platform runs in this process on the real Temporal dev server;
spans go to an in-memory exporter."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from troupe.auth.dev import ensure_dev_key
from troupe.config import TracingSettings, load_settings
from troupe.observability.tracing import configure_tracing
from troupe.platform import running_platform

pytestmark = pytest.mark.integration

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session")
def spans() -> InMemorySpanExporter:
    # A process has one tracer provider, for good: installed once for the session.
    configure_tracing(TracingSettings(enabled=True), exporter=_EXPORTER)
    return _EXPORTER


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    names = []
    parent = span.parent
    while parent is not None:
        above = by_id.get(parent.span_id)
        assert above is not None, f"{span.name}: parent {parent.span_id:x} was not exported"
        names.append(above.name)
        parent = above.parent
    return names


async def test_a_task_is_one_trace_from_the_http_request_to_the_sandbox(
    spans: InMemorySpanExporter,
    temporal_address: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    spans.clear()
    settings = load_settings(
        None,
        data_dir=str(tmp_path),
        server={"port": 0},
        temporal={"address": temporal_address, "task_queue": f"trace-{secrets.token_hex(4)}"},
        tracing={"enabled": True},
        orchestrator={"react_tools": ["calculator", "python_exec"]},
        sandbox={"cache_dir": str(tmp_path_factory.getbasetemp() / "sandbox-cache")},
        memory={"enabled": False},
    )
    code = json.dumps({"code": "print(6 * 7)"})
    async with running_platform(settings, api=True, worker=True) as platform:
        key = await ensure_dev_key(platform.services.directory, settings.data_dir)
        async with httpx.AsyncClient(
            base_url=platform.base_url or "", headers={"Authorization": f"Bearer {key}"}
        ) as http:
            submitted = await http.post(
                "/api/v1/tasks",
                json={"query": f"Compute it [[python_exec {code}]]", "strategy": "react"},
            )
            assert submitted.status_code == 202, submitted.text
            task_id = submitted.json()["id"]
            async with asyncio.timeout(60):
                while (task := (await http.get(f"/api/v1/tasks/{task_id}")).json())[
                    "status"
                ] not in ("completed", "failed"):
                    await asyncio.sleep(0.05)
    assert task["status"] == "completed", task["error"]

    finished = spans.get_finished_spans()
    (root,) = [
        s
        for s in finished
        if s.kind is SpanKind.SERVER
        and s.attributes
        and s.attributes.get("http.route") == "/api/v1/tasks"
        and s.attributes.get("http.request.method", s.attributes.get("http.method")) == "POST"
    ]
    assert root.parent is None
    trace_id = root.context.trace_id
    assert task["trace_id"] == f"{trace_id:032x}"
    mine = [s for s in finished if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in mine}
    names = {s.name for s in mine}
    assert {"StartWorkflow:TaskWorkflow", "RunWorkflow:TaskWorkflow"} <= names
    assert "RunActivity:react_step" in names
    for leaf in ("llm.call", "tool.call", "sandbox.run"):
        found = [s for s in mine if s.name == leaf]
        assert found, f"no {leaf} span in the task's trace"
        # Every one hangs from the HTTP request, through the workflow and an activity.
        chain = _ancestors(found[0], by_id)
        assert chain[-1] == root.name
        assert "RunActivity:react_step" in chain
    sandbox = next(s for s in mine if s.name == "sandbox.run")
    assert sandbox.attributes is not None
    assert sandbox.attributes["troupe.sandbox.exit_code"] == 0
    assert _ancestors(sandbox, by_id)[0] == "tool.call"
    llm = next(s for s in mine if s.name == "llm.call")
    assert llm.attributes is not None
    tokens = llm.attributes["gen_ai.usage.input_tokens"]
    assert isinstance(tokens, int)
    assert tokens > 0
