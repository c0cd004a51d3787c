"""Production topology: PostgreSQL, Redis and Temporal as separate servers, two
`troupe api` and two `troupe worker` processes. Nothing shared lives in one process."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import REPO, TROUPE, TroupeProcess, child_env
from tests.servers import create_database, drop_database
from troupe.client import TroupeClient
from troupe.orchestrator.devserver import free_port

pytestmark = pytest.mark.e2e


class Topology:
    def __init__(self, env: dict[str, str], logs: Path, api_key: str) -> None:
        self.env = env
        self.logs = logs
        self.api_key = api_key
        self.processes: list[TroupeProcess] = []

    def start(self, role: str, name: str, **extra_env: str) -> TroupeProcess:
        process = TroupeProcess(role, env={**self.env, **extra_env}, log=self.logs / f"{name}.log")
        self.processes.append(process)
        process.start()
        if role == "worker":
            process.wait_log("Troupe ready")
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture
def topology(
    postgres_url: str, redis_url: str, temporal_address: str, tmp_path: Path
) -> Iterator[Topology]:
    database_url = asyncio.run(create_database(postgres_url))
    env = {
        "TROUPE_DATABASE__URL": database_url,
        "TROUPE_REDIS__URL": redis_url,
        "TROUPE_TEMPORAL__ADDRESS": temporal_address,
        "TROUPE_TEMPORAL__TASK_QUEUE": f"topology-{secrets.token_hex(4)}",
        "TROUPE_DATA_DIR": str(tmp_path / "data"),
        "TROUPE_LLM__SIMULATION__LATENCY_MS": "1500",
        "TROUPE_TASKS__HEARTBEAT_TIMEOUT_S": "1",
        "TROUPE_LOG__LEVEL": "WARNING",
        # No Qdrant server here (none ships on pip); local mode is one process only.
        "TROUPE_MEMORY__ENABLED": "false",
    }
    for command in (["db", "upgrade"], ["tenant", "create", "prod"]):
        done = _troupe(command, env)
        assert done.returncode == 0, done.stderr
    # Production has no implicit tenant: the operator makes one and a key for it.
    key = _troupe(["key", "create", "--tenant", "prod"], env)
    assert key.returncode == 0, key.stderr
    topo = Topology(env, tmp_path, key.stdout.strip())
    try:
        yield topo
    finally:
        topo.stop_all()
        asyncio.run(drop_database(database_url, postgres_url))


def _troupe(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TROUPE, *args], env=child_env(env), cwd=REPO, capture_output=True, text=True, timeout=60
    )


def _all_running(client: TroupeClient, ids: list[str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while any(client.get_task(i).status != "running" for i in ids):
        assert time.monotonic() < deadline, "tasks never started running"
        time.sleep(0.05)


def test_tasks_complete_through_either_api_and_stream_through_the_other(
    topology: Topology,
) -> None:
    # Budgets in Redis here (the other test keeps them in PostgreSQL).
    redis_ledger = {"TROUPE_BUDGETS__LEDGER": "redis"}
    api_a = topology.start("api", "api-a", **redis_ledger)
    api_b = topology.start("api", "api-b", **redis_ledger)
    metrics_ports = free_port(), free_port()
    for name, port in zip(("worker-a", "worker-b"), metrics_ports, strict=True):
        topology.start("worker", name, TROUPE_WORKER__METRICS_PORT=str(port), **redis_ledger)
    with (
        TroupeClient(api_a.url, api_key=topology.api_key) as a,
        TroupeClient(api_b.url, api_key=topology.api_key) as b,
    ):
        via_a = a.submit_task("submitted through A")
        via_b = b.submit_task("submitted through B")
        # Each task's stream is followed through the API that did not accept it.
        events_b = [e.type for e in b.follow(via_a.id)]
        events_a = [e.type for e in a.follow(via_b.id)]
        for events in (events_a, events_b):
            assert events[0] == "task.submitted"
            assert events[-1] == "task.completed"
        assert a.get_task(via_b.id).result
        assert b.get_task(via_a.id).result
        # Both workers settled their calls in the shared Redis ledger, exactly.
        spent = a.get_task(via_a.id).usage.total_tokens + b.get_task(via_b.id).usage.total_tokens
        today = a.budgets().tenant_daily
        assert (today.used_tokens, today.reserved_tokens) == (spent, 0)
    # No implicit tenant, no bypass: without a key the API refuses, and no dev key exists.
    anonymous = httpx.get(f"{api_a.url}/api/v1/tasks")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "auth_required"
    assert not (Path(topology.env["TROUPE_DATA_DIR"]) / "dev-api-key").exists()
    # Task outcomes are counted where they happen: in the workers' own /metrics.
    finished = 0.0
    for port in metrics_ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        for line in text.splitlines():
            if line.startswith("troupe_tasks_finished_total{") and 'status="completed"' in line:
                finished += float(line.rsplit(" ", 1)[1])
    assert finished == 2


def test_killing_an_api_and_a_worker_loses_no_accepted_task(topology: Topology) -> None:
    api_a, api_b = topology.start("api", "api-a"), topology.start("api", "api-b")
    worker_a = topology.start("worker", "worker-a")
    with (
        TroupeClient(api_a.url, api_key=topology.api_key) as a,
        TroupeClient(api_b.url, api_key=topology.api_key) as b,
    ):
        accepted = [(a if n % 2 else b).submit_task(f"task {n}").id for n in range(6)]
        _all_running(b, accepted)  # all of them are in worker A's hands now
        api_a.kill()
        worker_a.kill()
        topology.start("worker", "worker-b")
        for task_id in accepted:
            task = b.wait(task_id)
            assert task.status == "completed", task
            starts = [e for e in b.follow(task_id) if e.type == "task.started"]
            assert len(starts) >= 2  # the killed worker's attempt was retried by B
