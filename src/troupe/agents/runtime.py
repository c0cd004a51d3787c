"""The simple agent: one LLM call answers the task, metered and bounded by its budget."""

from __future__ import annotations

import time
from dataclasses import dataclass

from troupe.config import LLMSettings
from troupe.domain import TaskStatus, Usage
from troupe.errors import BudgetExceeded
from troupe.llm.base import LLMProvider
from troupe.llm.messages import ChatMessage, ChatRequest
from troupe.llm.pricing import cost_micro_usd, estimate_prompt_tokens, price_for
from troupe.orchestrator.journal import TaskJournal
from troupe.storage.repositories import LLMCallRecord

SYSTEM_PROMPT = (
    "You are a careful assistant working inside Troupe. Answer the task directly and "
    "concisely; say what you assumed."
)


@dataclass(frozen=True, slots=True)
class AgentJob:
    tenant_id: str
    task_id: str
    query: str
    token_budget: int
    attempt: int
    # Unique per activity attempt: the metering key of every call this attempt makes.
    attempt_key: str


@dataclass(frozen=True, slots=True)
class AgentAnswer:
    content: str
    usage: Usage


class SimpleAgent:
    """Answers a task with one LLM call; records start, usage and result in the journal."""

    def __init__(self, provider: LLMProvider, journal: TaskJournal, settings: LLMSettings) -> None:
        self._provider = provider
        self._journal = journal
        self._settings = settings

    async def run(self, job: AgentJob) -> AgentAnswer:
        task = await self._journal.started(job.tenant_id, job.task_id, attempt=job.attempt)
        messages = (
            ChatMessage(role="system", content=SYSTEM_PROMPT),
            ChatMessage(role="user", content=job.query),
        )
        # Earlier attempts' calls were real and paid for: they count against the budget.
        spent = task.usage.total_tokens
        max_tokens = self._completion_allowance(job, spent + estimate_prompt_tokens(messages))
        request = ChatRequest(model=self._settings.model, messages=messages, max_tokens=max_tokens)
        started = time.perf_counter()
        response = await self._provider.complete(request)
        latency_ms = round((time.perf_counter() - started) * 1000)
        usage = Usage(
            prompt_tokens=response.usage.prompt_tokens,
            completion_tokens=response.usage.completion_tokens,
            cost_micro_usd=cost_micro_usd(
                response.usage, price_for(response.model, self._settings.pricing)
            ),
        )
        await self._journal.llm_call(
            job.tenant_id,
            job.task_id,
            LLMCallRecord(
                call_key=f"{job.attempt_key}:0",
                provider=response.provider,
                model=response.model,
                usage=usage,
                cached_tokens=response.usage.cached_tokens,
                latency_ms=latency_ms,
            ),
        )
        await self._journal.finished(
            job.tenant_id, job.task_id, TaskStatus.COMPLETED, result=response.content
        )
        return AgentAnswer(content=response.content, usage=usage)

    def _completion_allowance(self, job: AgentJob, committed: int) -> int:
        """Shrink max_tokens so spent + prompt + completion fits; refuse if nothing fits."""
        room = job.token_budget - committed
        if room < 1:
            raise BudgetExceeded(
                f"this call needs ~{committed} tokens before any answer; "
                f"the task's budget is {job.token_budget}"
            )
        return min(self._settings.max_tokens, room)
