"""Per-tenant limits through a real `troupe serve`: 429 with a code and Retry-After."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import TroupeProcess

pytestmark = pytest.mark.e2e


def test_over_the_request_rate_or_the_task_cap_answers_429(tmp_path: Path) -> None:
    process = TroupeProcess(
        "serve",
        env={
            "TROUPE_DATA_DIR": str(tmp_path),
            "TROUPE_LIMITS__REQUESTS_PER_S": "0.2",
            "TROUPE_LIMITS__BURST": "4",
            "TROUPE_LIMITS__MAX_CONCURRENT_TASKS": "1",
            "TROUPE_LLM__SIMULATION__LATENCY_MS": "3000",  # the first task stays unfinished
        },
        log=tmp_path / "serve.log",
    ).start()
    try:
        with httpx.Client(base_url=process.url, trust_env=False) as http:
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
