"""The prompt cache through the API: a repeated task is answered at zero tokens, unless
it opts out."""

from __future__ import annotations

import secrets

import pytest

from tests.e2e.processes import TroupeProcess
from troupe.client import TroupeClient
from troupe.domain import TaskStatus

pytestmark = pytest.mark.e2e


def test_a_repeated_task_costs_nothing_and_an_opted_out_one_pays(served: TroupeProcess) -> None:
    query = f"Name three uses of a cache ({secrets.token_hex(4)})"
    with TroupeClient(served.url, api_key=served.api_key) as client:
        first = client.wait(client.submit_task(query, strategy="simple").id)
        again = client.wait(client.submit_task(query, strategy="simple").id)
        fresh = client.wait(client.submit_task(query, strategy="simple", cache=False).id)
        calls = {
            task.id: [e.data for e in client.follow(task.id) if e.type == "llm.call"]
            for task in (first, again, fresh)
        }
    for task in (first, again, fresh):
        assert task.status is TaskStatus.COMPLETED
    assert again.result == first.result
    assert first.usage.total_tokens > 0
    assert [c["cache_hit"] for c in calls[first.id]] == [False]
    assert again.usage.total_tokens == 0
    assert again.usage.cost_micro_usd == 0
    assert [c["cache_hit"] for c in calls[again.id]] == [True]
    assert fresh.usage.total_tokens == first.usage.total_tokens
    assert [c["cache_hit"] for c in calls[fresh.id]] == [False]
