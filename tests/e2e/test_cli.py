"""The `troupe` command line, run as a user would."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.processes import REPO, TROUPE, TroupeProcess, child_env
from troupe.client import TroupeAPIError, TroupeClient
from troupe.orchestrator.devserver import free_port
from troupe.storage.database import SCHEMA_HEAD

pytestmark = pytest.mark.e2e


def _troupe(
    *args: str, env: dict[str, str], timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TROUPE, *args],
        env=child_env(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def _as(served: TroupeProcess) -> dict[str, str]:
    """The environment of a CLI call against ``served``: its key."""
    return {"TROUPE_API_KEY": served.api_key}


def test_run_against_a_server_prints_result_tokens_and_cost(served: TroupeProcess) -> None:
    done = _troupe("run", "--server", served.url, "What is durable execution?", env=_as(served))
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "completed" in output
    assert "[simulated sim-small]" in output  # the answer itself, not eaten as markup
    assert "total tokens" in output
    assert "cost" in output
    assert "$0.0000" in output


def test_run_without_a_server_uses_an_ephemeral_embedded_platform(tmp_path: Path) -> None:
    done = _troupe("run", "Hello from the demo", env={"TROUPE_DATA_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "embedded Troupe ready" in done.stderr
    assert "completed" in done.stdout  # the result goes to stdout, progress to stderr
    assert list(tmp_path.iterdir()) == []  # the ephemeral run kept its state elsewhere


def test_run_refused_by_the_server_exits_non_zero(served: TroupeProcess) -> None:
    done = _troupe(
        "run", "--server", served.url, "x", "--token-budget", "99999999", env=_as(served)
    )
    assert done.returncode == 1
    assert "budget_too_large" in done.stderr


def test_invalid_config_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    done = _troupe(
        "serve", env={"TROUPE_SERVER__PORT": "seventy", "TROUPE_DATA_DIR": str(tmp_path)}
    )
    assert done.returncode == 2
    assert "server.port" in done.stderr
    assert "TROUPE_SERVER__PORT" in done.stderr


def test_production_roles_refuse_to_start_without_a_shared_temporal(tmp_path: Path) -> None:
    done = _troupe("api", env={"TROUPE_DATA_DIR": str(tmp_path)})
    assert done.returncode == 1
    assert "temporal.address" in done.stderr


def test_db_upgrade_and_downgrade(tmp_path: Path) -> None:
    env = {"TROUPE_DATA_DIR": str(tmp_path)}
    up = _troupe("db", "upgrade", env=env)
    assert up.returncode == 0, up.stderr
    assert f"database schema at {SCHEMA_HEAD}" in up.stderr
    down = _troupe("db", "downgrade", "base", env=env)
    assert down.returncode == 0, down.stderr
    assert "database schema at base" in down.stderr


def test_replay_a_finished_task_through_the_server_and_from_an_export(
    served: TroupeProcess, tmp_path: Path
) -> None:
    with TroupeClient(served.url, api_key=served.api_key) as client:
        task = client.wait(client.submit_task("Weigh two options", strategy="dag").id)
        report = client.replay_task(task.id)
    assert report.deterministic
    assert report.consistent
    assert report.nodes
    assert all(n.equal for n in report.nodes)

    done = _troupe("replay", task.id, "--server", served.url, env=_as(served))
    assert done.returncode == 0, done.stderr
    assert "verdict: consistent" in done.stdout

    exported = _troupe(
        "replay", task.id, "--server", served.url, "--export", str(tmp_path), env=_as(served)
    )
    assert exported.returncode == 0, exported.stderr
    (saved,) = tmp_path.glob("*.json")
    offline = _troupe("replay", "--file", str(saved), "--json", env={})
    assert offline.returncode == 0, offline.stderr
    (offline_report,) = json.loads(offline.stdout)
    assert offline_report["deterministic"] is True
    assert offline_report["workflow_id"] == f"task-{task.id}"


def test_replaying_an_unfinished_or_unknown_task_is_refused(served: TroupeProcess) -> None:
    with TroupeClient(served.url, api_key=served.api_key) as client:
        waiting = client.submit_task("hold on", require_approval=True)
        deadline = time.monotonic() + 30
        while client.get_task(waiting.id).status != "awaiting_approval":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(TroupeAPIError) as caught:
            client.replay_task(waiting.id)
        assert (caught.value.status, caught.value.code) == (409, "task_not_ended")
        client.reject_task(waiting.id, reason="test over")
    done = _troupe("replay", "tsk_" + "0" * 24, "--server", served.url, env=_as(served))
    assert done.returncode == 1
    assert "task_not_found" in done.stderr


def test_replay_against_an_unreachable_server_says_so() -> None:
    done = _troupe(
        "replay", "tsk_" + "0" * 24, "--server", f"http://127.0.0.1:{free_port()}", env={}
    )
    assert done.returncode == 1
    assert "cannot reach" in done.stderr


def test_a_react_task_replays_consistently(served: TroupeProcess) -> None:
    with TroupeClient(served.url, api_key=served.api_key) as client:
        task = client.wait(client.submit_task("What is 6 * 7?", strategy="react").id)
        assert task.status == "completed"
        assert task.result is not None
        assert "42" in task.result
        report = client.replay_task(task.id)
    assert report.deterministic
    assert report.result_equal is True
    assert report.consistent
