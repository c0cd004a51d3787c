"""TaskWorkflow, simple strategy, on the real Temporal dev server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from temporalio.client import WorkflowExecutionStatus

from tests.integration.orchestrator.conftest import both_activity_kinds
from tests.integration.orchestrator.rig import TENANT, RigFactory
from troupe.domain import EventType, TaskStatus
from troupe.errors import ProviderError
from troupe.llm.messages import ChatResponse
from troupe.llm.pricing import estimate_prompt_tokens
from troupe.testing import ScriptedProvider, scripted_answer

pytestmark = pytest.mark.integration


def _provider(script: Sequence[ChatResponse | Exception]) -> ScriptedProvider:
    return ScriptedProvider(script)


async def test_simple_task_completes_with_result_and_metered_usage(rig: RigFactory) -> None:
    provider = _provider([scripted_answer("4", completion_tokens=3)])
    async with rig(provider) as r:
        task = await r.until_ended((await r.submit()).id)
        assert task.status is TaskStatus.COMPLETED
        assert task.result == "4"
        assert task.usage.completion_tokens == 3
        assert task.usage.prompt_tokens == estimate_prompt_tokens(provider.requests[0].messages)
        assert task.usage.cost_micro_usd > 0
        assert await r.event_types(task.id) == [
            EventType.SUBMITTED,
            EventType.STARTED,
            EventType.LLM_CALL,
            EventType.COMPLETED,
        ]


@both_activity_kinds
async def test_a_retryable_provider_failure_is_retried_and_the_task_completes(
    rig: RigFactory, local_activities: bool
) -> None:
    provider = _provider([ProviderError("overloaded"), scripted_answer("fine")])
    async with rig(provider, orchestrator={"local_activities": local_activities}) as r:
        task = await r.until_ended((await r.submit()).id)
        assert task.status is TaskStatus.COMPLETED
        assert len(provider.requests) == 2
        types = await r.event_types(task.id)
        assert types.count(EventType.STARTED) == 2
        assert types.count(EventType.LLM_CALL) == 1  # the failed call reported no usage


async def test_a_non_retryable_failure_fails_the_task_at_once_with_its_code(
    rig: RigFactory,
) -> None:
    rejected = ProviderError("prompt refused", code="provider_rejected", retryable=False)
    provider = _provider([rejected])
    async with rig(provider) as r:
        task = await r.until_ended((await r.submit()).id)
        assert task.status is TaskStatus.FAILED
        assert task.error is not None
        assert (task.error.code, task.error.message) == ("provider_rejected", "prompt refused")
        assert len(provider.requests) == 1


async def test_exhausted_retries_fail_the_task(rig: RigFactory) -> None:
    provider = _provider([ProviderError("down", code="provider_unavailable")])
    async with rig(provider) as r:
        task = await r.until_ended((await r.submit()).id)
        assert task.status is TaskStatus.FAILED
        assert task.error is not None
        assert task.error.code == "provider_unavailable"
        assert len(provider.requests) == 2  # tasks.max_attempts


async def test_a_budget_too_small_for_the_prompt_ends_the_task_before_any_call(
    rig: RigFactory,
) -> None:
    provider = _provider([scripted_answer("never")])
    async with rig(provider) as r:
        task = await r.until_ended((await r.submit(budget=5)).id)
        assert task.status is TaskStatus.BUDGET_EXCEEDED
        assert task.error is not None
        assert task.error.code == "budget_exceeded"
        assert provider.requests == []
        assert task.usage.total_tokens == 0


@both_activity_kinds
async def test_cancel_stops_the_running_agent_and_ends_the_task_cancelled(
    rig: RigFactory, local_activities: bool
) -> None:
    gate = asyncio.Event()  # never set: the provider call hangs until cancelled
    provider = ScriptedProvider([scripted_answer("too late")], gate=gate)
    async with rig(provider, orchestrator={"local_activities": local_activities}) as r:
        task = await r.submit()
        await r.until_status(task.id, TaskStatus.RUNNING)
        await r.launcher.cancel(tenant_id=TENANT, task_id=task.id)
        ended = await r.until_ended(task.id)
        assert ended.status is TaskStatus.CANCELLED
        assert provider.cancelled == 1
        types = await r.event_types(task.id)
        assert EventType.CANCEL_REQUESTED in types
        assert types[-1] is EventType.CANCELLED
        handle = r.launcher._client.get_workflow_handle(task.workflow_id)
        async with asyncio.timeout(10):
            while (await handle.describe()).status is not WorkflowExecutionStatus.CANCELED:
                await asyncio.sleep(0.05)
