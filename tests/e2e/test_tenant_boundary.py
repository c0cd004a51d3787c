"""Tenant B probes every endpoint with tenant A's ids: 404, never 403, and no list or
total of B's shows anything of A's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.processes import TroupeProcess, new_tenant_key
from troupe.client import TroupeClient

pytestmark = pytest.mark.e2e


@dataclass
class TwoTenants:
    a: str  # keys
    b: str
    session: str  # A's session
    ended: str  # A's completed task
    waiting: str  # A's task awaiting approval


@pytest.fixture(scope="module")
def two_tenants(served: TroupeProcess) -> Iterator[TwoTenants]:
    a, b = new_tenant_key(served, "tenant-a"), new_tenant_key(served, "tenant-b")
    with TroupeClient(served.url, api_key=a) as client:
        ended = client.wait(client.submit_task("A's secret plan", session_id="a-session").id)
        assert ended.status == "completed"
        waiting = client.submit_task("A's pending plan", strategy="dag", require_approval=True)
        deadline = time.monotonic() + 30
        while client.get_task(waiting.id).status != "awaiting_approval":
            assert time.monotonic() < deadline, "the task never came to await approval"
            time.sleep(0.05)
        yield TwoTenants(a=a, b=b, session="a-session", ended=ended.id, waiting=waiting.id)
        client.reject_task(waiting.id, reason="test over")


def _probes(t: TwoTenants) -> list[tuple[str, str, dict[str, Any]]]:
    tasks = "/api/v1/tasks"
    probes: list[tuple[str, str, dict[str, Any]]] = []
    for task_id in (t.ended, t.waiting):
        probes += [
            ("GET", f"{tasks}/{task_id}", {}),
            ("GET", f"{tasks}/{task_id}/events", {}),
            ("GET", f"{tasks}/{task_id}/events", {"headers": {"Last-Event-ID": "1"}}),
            ("POST", f"{tasks}/{task_id}/cancel", {}),
            ("POST", f"{tasks}/{task_id}/approve", {"json": {"reason": "mine now"}}),
            ("POST", f"{tasks}/{task_id}/reject", {"json": {"reason": "mine now"}}),
            ("POST", f"{tasks}/{task_id}/replay", {}),
            ("GET", f"{tasks}/{task_id}/history", {}),
        ]
    # Continuing A's session from B: the session does not exist for B.
    probes.append(("POST", tasks, {"json": {"query": "hi", "session_id": t.session}}))
    return probes


def test_another_tenants_things_answer_404_never_403(
    served: TroupeProcess, two_tenants: TwoTenants
) -> None:
    answers = []
    with httpx.Client(
        base_url=served.url, headers={"Authorization": f"Bearer {two_tenants.b}"}, timeout=10
    ) as http:
        for method, path, kwargs in _probes(two_tenants):
            response = http.request(method, path, **kwargs)
            answers.append((method, path, response.status_code, response.json()["error"]["code"]))
    wrong = [a for a in answers if a[2] != 404]
    assert not wrong, wrong
    assert {a[3] for a in answers} == {"task_not_found", "session_not_found"}


def test_an_unknown_id_and_another_tenants_id_get_the_same_answer(
    served: TroupeProcess, two_tenants: TwoTenants
) -> None:
    unknown = "tsk_" + "f" * 24
    with httpx.Client(
        base_url=served.url, headers={"Authorization": f"Bearer {two_tenants.b}"}, timeout=10
    ) as http:
        theirs = http.get(f"/api/v1/tasks/{two_tenants.ended}").json()["error"]
        nobody = http.get(f"/api/v1/tasks/{unknown}").json()["error"]
    assert theirs["code"] == nobody["code"]
    assert theirs["message"].replace(two_tenants.ended, unknown) == nobody["message"]


def test_lists_and_totals_never_show_another_tenants_data(
    served: TroupeProcess, two_tenants: TwoTenants
) -> None:
    with TroupeClient(served.url, api_key=two_tenants.b) as b:
        mine = b.wait(b.submit_task("B's own question").id)
        listed = b.list_tasks(limit=200).items
        in_a_session = b.list_tasks(session_id=two_tenants.session).items
        usage = b.usage()
        budgets = b.budgets()
    assert [t.id for t in listed] == [mine.id]
    assert in_a_session == []
    assert usage.total.total_tokens == mine.usage.total_tokens
    assert two_tenants.session not in [s.session_id for s in usage.by_session]
    assert budgets.tenant_daily.used_tokens == mine.usage.total_tokens
    # A's own view still has everything of A's, and nothing of B's.
    with TroupeClient(served.url, api_key=two_tenants.a) as a:
        a_ids = {t.id for t in a.list_tasks(limit=200).items}
        assert a.get_task(two_tenants.ended).status == "completed"
    assert {two_tenants.ended, two_tenants.waiting} <= a_ids
    assert mine.id not in a_ids
