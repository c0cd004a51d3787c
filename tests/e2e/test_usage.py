"""GET /api/v1/usage: its sums are the provider-reported usage of the tenant's calls."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.e2e.processes import TroupeProcess
from troupe.client import TroupeClient

pytestmark = pytest.mark.e2e


def test_usage_sums_equal_the_reported_usage_of_the_calls(served: TroupeProcess) -> None:
    with TroupeClient(served.url, api_key=served.api_key) as client:
        before = client.usage()
        tasks = [
            client.wait(client.submit_task(f"{query} {secrets.token_hex(3)}", strategy=kind).id)
            for query, kind in (("Add 2 and 3", "simple"), ("Compare A with B", "dag"))
        ]
        after = client.usage()
        calls = [
            _tokens(event.data)
            for task in tasks
            for event in client.follow(task.id)
            if event.type == "llm.call"
        ]
    assert len(calls) >= 2
    grew = {
        "calls": after.total.calls - before.total.calls,
        "prompt": after.total.prompt_tokens - before.total.prompt_tokens,
        "completion": after.total.completion_tokens - before.total.completion_tokens,
        "cost": after.total.cost_micro_usd - before.total.cost_micro_usd,
    }
    assert grew == {
        "calls": len(calls),
        "prompt": sum(c["prompt_tokens"] for c in calls),
        "completion": sum(c["completion_tokens"] for c in calls),
        "cost": sum(c["cost_micro_usd"] for c in calls),
    }
    assert grew["prompt"] == sum(t.usage.prompt_tokens for t in tasks)
    today = datetime.now(UTC).date().isoformat()
    assert after.by_day[-1].day == today
    assert sum(m.total_tokens for m in after.by_model) == after.total.total_tokens


def _tokens(data: dict[str, object]) -> dict[str, int]:
    counts = {k: data[k] for k in ("prompt_tokens", "completion_tokens", "cost_micro_usd")}
    assert all(isinstance(v, int) for v in counts.values())
    return {k: int(str(v)) for k, v in counts.items()}


def test_a_backwards_range_is_refused(served: TroupeProcess) -> None:
    today = datetime.now(UTC).date()
    with httpx.Client(base_url=served.url, headers=served.auth, trust_env=False) as http:
        backwards = http.get(
            "/api/v1/usage",
            params={"since": today.isoformat(), "until": (today - timedelta(days=1)).isoformat()},
        )
        malformed = http.get("/api/v1/usage", params={"since": "yesterday"})
        too_long = http.get(
            "/api/v1/usage",
            params={"since": (today - timedelta(days=400)).isoformat()},
        )
    assert backwards.status_code == 422
    assert backwards.json()["error"]["code"] == "invalid_range"
    assert too_long.status_code == 422
    assert malformed.status_code == 422
    assert "code" in malformed.json()["error"]
