"""Replay: re-run a task's recorded workflow history against the current code.

temporalio's Replayer feeds the history to TaskWorkflow as it is now; any decision
the code makes differently from the recording is a nondeterminism failure. Then the
outputs recorded in the history (each node's activity result, the final answer) are
compared with what storage holds, node by node, so a report says both whether the
code still replays and whether the record is consistent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel
from temporalio.api.common.v1 import Payloads
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from troupe.domain import NodeRun, Task
from troupe.orchestrator.payloads import NodeTask, ReactStepResult
from troupe.orchestrator.report import NodeComparison, ReplayReport
from troupe.orchestrator.workflows.task import TaskWorkflow

# Activities whose result is the task's final answer.
_ANSWERING = ("run_simple_agent", "synthesize")
# What Temporal's core SDK names the marker recording a local activity's outcome.
_LOCAL_ACTIVITY_MARKER = "core_local_activity"


def new_replayer() -> Replayer:
    """A replayer configured like the worker (same workflows, converter and sandbox)."""
    return Replayer(
        workflows=[TaskWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
        ),
    )


async def fetch_history(client: Client, workflow_id: str) -> WorkflowHistory:
    return await client.get_workflow_handle(workflow_id).fetch_history()


def load_history(path: Path) -> WorkflowHistory:
    """A history saved by ``troupe replay --export``: ``{"workflow_id", "history"}``,
    or Temporal's bare history JSON (then the file name is taken as the workflow id)."""
    saved = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(saved, dict) and {"workflow_id", "history"} <= saved.keys():
        return WorkflowHistory.from_json(str(saved["workflow_id"]), saved["history"])
    return WorkflowHistory.from_json(path.stem, saved)


async def replay_history(
    history: WorkflowHistory,
    *,
    task: Task | None = None,
    nodes: Sequence[NodeRun] = (),
    replayer: Replayer | None = None,
) -> ReplayReport:
    """Replay ``history``; compare its outputs with the stored ``task`` and ``nodes``."""
    result = await (replayer or new_replayer()).replay_workflow(
        history, raise_on_replay_failure=False
    )
    failure = result.replay_failure
    recorded = _recorded_outputs(history.events)
    report = ReplayReport(
        workflow_id=history.workflow_id,
        run_id=history.run_id,
        events=len(history.events),
        deterministic=failure is None,
        replay_error=f"{type(failure).__name__}: {failure}" if failure else None,
    )
    divergences: list[str] = []
    if failure is not None:
        divergences.append(f"replay: {failure}")
    if task is not None:
        answer = recorded.answer
        if answer is not None or task.result is not None:  # else: nothing to compare
            report.result_equal = answer == task.result
            if not report.result_equal:
                divergences.append("the final answer")
        report.nodes = _compare_nodes(recorded.nodes, nodes)
        divergences += [f"node {n.node_id}" for n in report.nodes if n.equal is False]
    else:  # a history from a file: only its own outputs are known
        report.nodes = [
            NodeComparison(
                node_id=node_id,
                in_history=True,
                in_storage=False,
                equal=None,
                history_digest=_digest(output),
                stored_digest=None,
            )
            for node_id, output in recorded.nodes.items()
        ]
    report.first_divergence = divergences[0] if divergences else None
    return report


class _Recorded(BaseModel):
    nodes: dict[str, str]
    answer: str | None


class _Completed(NamedTuple):
    """An activity's successful result as the history holds it."""

    order: int  # the event that scheduled (or recorded) it: a deterministic order
    name: str
    node_id: str | None  # run_node only
    result: Payloads


def _recorded_outputs(events: Sequence[HistoryEvent]) -> _Recorded:
    """Each node's output and the final answer, as the history recorded them."""
    converter = pydantic_data_converter.payload_converter
    nodes: dict[int, tuple[str, str]] = {}
    answer: str | None = None
    for done in _completed_activities(events):
        if done.name == "run_node":
            assert done.node_id is not None
            (output,) = converter.from_payloads(done.result.payloads, [str])
            nodes[done.order] = (done.node_id, output)
        elif done.name in _ANSWERING:
            (answer,) = converter.from_payloads(done.result.payloads, [str])
        elif done.name == "react_step":
            (step,) = converter.from_payloads(done.result.payloads, [ReactStepResult])
            if step.answer is not None:
                answer = step.answer
    return _Recorded(nodes=dict(nodes[k] for k in sorted(nodes)), answer=answer)


def _completed_activities(events: Sequence[HistoryEvent]) -> Iterator[_Completed]:
    """Regular activities (scheduled, then completed events) and local ones (a marker
    each, whose id names the node: a marker keeps no input)."""
    converter = pydantic_data_converter.payload_converter
    scheduled: dict[int, tuple[str, Payloads]] = {}
    for event in events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = (attrs.activity_type.name, attrs.input)
        elif event.HasField("activity_task_completed_event_attributes"):
            done = event.activity_task_completed_event_attributes
            name, payload_in = scheduled[done.scheduled_event_id]
            node_id = None
            if name == "run_node":
                (job,) = converter.from_payloads(payload_in.payloads, [NodeTask])
                node_id = job.node.id
            yield _Completed(done.scheduled_event_id, name, node_id, done.result)
        elif event.HasField("marker_recorded_event_attributes"):
            marker = event.marker_recorded_event_attributes
            if marker.marker_name != _LOCAL_ACTIVITY_MARKER or "result" not in marker.details:
                continue  # another kind of marker, or a local activity that failed
            data = json.loads(marker.details["data"].payloads[0].data)
            name = str(data["activity_type"])
            node_id = str(data["activity_id"]).removeprefix("node:") if name == "run_node" else None
            yield _Completed(event.event_id, name, node_id, marker.details["result"])


def _digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()[:16]


def _compare_nodes(recorded: dict[str, str], stored: Sequence[NodeRun]) -> list[NodeComparison]:
    stored_outputs = {n.node_id: n.output for n in stored if n.output is not None}
    order = list(recorded) + [n for n in stored_outputs if n not in recorded]
    return [
        NodeComparison(
            node_id=node_id,
            in_history=node_id in recorded,
            in_storage=node_id in stored_outputs,
            equal=recorded.get(node_id) == stored_outputs.get(node_id),
            history_digest=_digest(recorded.get(node_id)),
            stored_digest=_digest(stored_outputs.get(node_id)),
        )
        for node_id in order
    ]
