"""Per-tenant limits and the daily budget through a real `troupe serve`: 429 with a code
and Retry-After."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import NO_MEMORY, TroupeProcess
from troupe.client import TroupeAPIError, TroupeClient
from troupe.domain import TaskStatus

pytestmark = pytest.mark.e2e


def test_over_the_request_rate_or_the_task_cap_answers_429(tmp_path: Path) -> None:
    process = TroupeProcess(
        "serve",
        env={
            **NO_MEMORY,
            "TROUPE_DATA_DIR": str(tmp_path),
            "TROUPE_LIMITS__REQUESTS_PER_S": "0.2",
            "TROUPE_LIMITS__BURST": "4",
            "TROUPE_LIMITS__MAX_CONCURRENT_TASKS": "1",
            "TROUPE_LLM__SIMULATION__LATENCY_MS": "3000",  # the first task stays unfinished
        },
        log=tmp_path / "serve.log",
    ).start()
    try:
        with httpx.Client(base_url=process.url, headers=process.auth, trust_env=False) as http:
            first = http.post("/api/v1/tasks", json={"query": "a slow one", "strategy": "simple"})
            second = http.post("/api/v1/tasks", json={"query": "one more", "strategy": "simple"})
            reads = [http.get("/api/v1/tasks") for _ in range(2)]
            over = http.get("/api/v1/tasks")
            health = http.get("/healthz")
    finally:
        assert process.stop() == 0, process.output()
    assert first.status_code == 202
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "too_many_tasks"
    assert second.headers["retry-after"] == "1"
    assert [r.status_code for r in reads] == [200, 200]  # the burst of 4 is used up now
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(over.headers["retry-after"]) <= 5  # a token comes back every 5 s
    assert health.status_code == 200  # probes are not rate limited


def test_a_used_up_daily_budget_refuses_submissions_with_its_reset(tmp_path: Path) -> None:
    process = TroupeProcess(
        "serve",
        env={
            **NO_MEMORY,
            "TROUPE_DATA_DIR": str(tmp_path),
            "TROUPE_BUDGETS__TENANT_DAILY_TOKENS": "80",
        },
        log=tmp_path / "serve.log",
    ).start()
    try:
        with TroupeClient(process.url, api_key=process.api_key) as client:
            first = client.wait(client.submit_task("What is 2+2?", strategy="simple").id)
            alerts = [e for e in client.follow(first.id) if e.type == "budget.alert"]
            budgets = client.budgets()
            with pytest.raises(TroupeAPIError) as refused:
                client.submit_task("And 3+3?", strategy="simple")
        with httpx.Client(base_url=process.url, trust_env=False) as http:
            scraped = http.get("/metrics").text
    finally:
        assert process.stop() == 0, process.output()
    assert first.status is TaskStatus.COMPLETED
    assert first.usage.total_tokens == 80  # the answer was cut to what the day had left
    assert [a.data["used_tokens"] for a in alerts] == [80]
    daily = budgets.tenant_daily
    assert (daily.limit_tokens, daily.used_tokens, daily.remaining_tokens) == (80, 80, 0)
    assert daily.alerting
    assert refused.value.status == 429
    assert refused.value.code == "budget_exhausted"
    assert "resets at" in refused.value.message
    assert 'troupe_budget_daily_utilization_ratio{tenant="local"} 1.0' in scraped
    assert 'troupe_limit_rejections_total{code="budget_exhausted"} 1.0' in scraped
