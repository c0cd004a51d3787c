"""Replay against the current code, and the consistency report against storage."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.integration.orchestrator.rig import TENANT, RigFactory
from tests.integration.orchestrator.team import Team, plan_json, team_provider
from troupe.domain import Strategy, TaskStatus
from troupe.orchestrator.payloads import TaskInput, TaskOutcome, WorkflowOptions
from troupe.orchestrator.replay import load_history, new_replayer, replay_history
from troupe.storage.tables import TaskNodeRow

pytestmark = pytest.mark.integration

HISTORIES = Path(__file__).parents[2] / "fixtures" / "histories"
WORKFLOWS = ("simple", "dag", "react", "approval")  # recorded as local/ and regular/


@workflow.defn(name="TaskWorkflow", sandboxed=False)
class ReorderedTaskWorkflow:
    """A deliberately incompatible change: it skips planning and answers with one agent."""

    @workflow.run
    async def run(self, task: TaskInput, options: WorkflowOptions) -> TaskOutcome:
        await workflow.execute_activity(
            "run_simple_agent", task, start_to_close_timeout=timedelta(seconds=5)
        )
        return TaskOutcome(task_id=task.task_id, status=TaskStatus.COMPLETED)


async def _dag_history(rig: RigFactory) -> tuple[WorkflowHistory, str]:
    team = Team(plans=[plan_json(("a", []), ("b", []), ("c", ["a", "b"]))])
    async with rig(team_provider(team)) as r:
        task = await r.until_ended((await r.submit(strategy=Strategy.DAG)).id)
        assert task.status is TaskStatus.COMPLETED
        history = await r.launcher.history(tenant_id=TENANT, task_id=task.id)
        report = await r.launcher.replay(tenant_id=TENANT, task_id=task.id)
        assert report.deterministic
        assert report.result_equal is True
        assert [(n.node_id, n.equal) for n in report.nodes] == [
            ("a", True),
            ("b", True),
            ("c", True),
        ]
        assert report.consistent
        assert "verdict: consistent" in report.text()

        # Storage that disagrees with the record is reported, node by node.
        async with r.engine.begin() as db:
            await db.execute(
                update(TaskNodeRow)
                .where(TaskNodeRow.task_id == task.id, TaskNodeRow.node_id == "b")
                .values(output="tampered")
            )
        tampered = await r.launcher.replay(tenant_id=TENANT, task_id=task.id)
        assert tampered.deterministic
        assert not tampered.consistent
        assert tampered.first_divergence == "node b"
        assert "DIVERGED at node b" in tampered.text()
        return history, task.id


async def test_a_dag_replays_deterministically_and_tampering_is_caught(rig: RigFactory) -> None:
    await _dag_history(rig)


async def test_an_incompatible_code_change_is_reported_as_nondeterministic(
    rig: RigFactory,
) -> None:
    history, _ = await _dag_history(rig)
    changed = Replayer(workflows=[ReorderedTaskWorkflow], data_converter=pydantic_data_converter)
    report = await replay_history(history, replayer=changed)
    assert not report.deterministic
    assert report.replay_error is not None
    assert "Nondeterminism" in report.replay_error or "nondetermin" in report.replay_error.lower()
    assert report.first_divergence is not None
    assert report.first_divergence.startswith("replay:")
    assert "determinism: FAILED" in report.text()


def _recorded() -> list[Path]:
    return sorted(HISTORIES.glob("*/*.json"))


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def test_recorded_histories_are_present() -> None:
    names = {_name(p) for p in _recorded()}
    expected = {f"{kind}/{name}" for kind in ("local", "regular") for name in WORKFLOWS}
    assert names == expected, "run tests/fixtures/histories/record.py"


@pytest.mark.parametrize("path", _recorded(), ids=[_name(p) for p in _recorded()])
async def test_recorded_history_still_replays(path: Path) -> None:
    history = load_history(path)
    report = await replay_history(history, replayer=new_replayer())
    assert report.deterministic, report.replay_error
    assert report.consistent
    if path.stem in ("dag", "approval"):  # the outputs of its 3 nodes are read back
        assert [n.in_history for n in report.nodes] == [True, True, True]
    # Each kind is what its folder says: local steps leave markers, regular ones events.
    kinds = {e.WhichOneof("attributes") for e in history.events}
    local = "marker_recorded_event_attributes" in kinds
    regular = "activity_task_scheduled_event_attributes" in kinds
    assert (local, regular) == (path.parent.name == "local", path.parent.name == "regular")


async def test_replays_of_many_histories_can_share_one_replayer() -> None:
    replayer = new_replayer()
    reports = await asyncio.gather(
        *(replay_history(load_history(p), replayer=replayer) for p in _recorded())
    )
    assert all(r.deterministic for r in reports)
