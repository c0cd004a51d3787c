"""What a task remembers and is reminded of.

Read side: a task in a session is told the conversation so far (the turns before its
question, older ones folded into a summary by ``sessions.summary_tier``) and the
memories closest to its question. That context is prepared by the task's first agent
step and fixed on the task (``tasks.context``), so every agent of the task, every retry
and every replay sees the same text, and the summary is paid for once.

Write side: a completed task's question and answer become memories (``tasks``, and
``session`` for a session task), and its session's hot copy is dropped.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from troupe.agents.metering import CallContext, MeteredLLM
from troupe.config import MemorySettings, SessionSettings
from troupe.domain import EventType, SessionTurn, Task
from troupe.llm.messages import ChatMessage
from troupe.llm.pricing import estimate_prompt_tokens
from troupe.observability import metrics
from troupe.orchestrator.journal import TaskJournal
from troupe.storage.sessions import SqlSessionStore
from troupe.storage.vectors import Concern, Recalled, VectorMemory

logger = logging.getLogger(__name__)

# The summary's call index within its activity attempt: clear of the agent's own calls.
SUMMARY_CALL_INDEX = 90
_RECALLED_CHARS = 600

SUMMARY_PROMPT = (
    "You keep the memory of a conversation between a user and an assistant. Rewrite the "
    "summary so it also covers the new turns: keep facts, decisions, numbers, names and "
    "open questions; drop pleasantries. At most 200 words, plain prose."
)


@dataclass(frozen=True)
class _History:
    summary: str | None
    turns: list[SessionTurn]
    summarized: int  # turns folded into the summary for this task


class TaskContexts:
    """Prepares a session task's context: the conversation so far and recalled memories."""

    def __init__(
        self,
        *,
        sessions: SqlSessionStore,
        vectors: VectorMemory | None,
        llm: MeteredLLM,
        journal: TaskJournal,
        session_settings: SessionSettings,
        memory_settings: MemorySettings,
    ) -> None:
        self._sessions = sessions
        self._vectors = vectors
        self._llm = llm
        self._journal = journal
        self._session_settings = session_settings
        self._memory_settings = memory_settings

    async def prompt_for(self, ctx: CallContext, query: str) -> str:
        """The task's question as its agents see it: after its context, if it has one
        (tasks outside a session have none, and their prompts stay cacheable)."""
        if ctx.session_id is None:
            return query
        task = await self._journal.task(ctx.tenant_id, ctx.task_id)
        context = task.context if task.context is not None else await self._prepare(ctx, query)
        return f"{context}\n\n## The task\n{query}" if context else query

    async def _prepare(self, ctx: CallContext, query: str) -> str:
        assert ctx.session_id is not None
        history = await self._history(ctx, ctx.session_id)
        recalled: list[Recalled] = []
        if self._vectors is not None and self._memory_settings.recall_limit:
            with _counted("recall"):
                recalled = await self._vectors.recall(
                    ctx.tenant_id,
                    query,
                    session_id=ctx.session_id,
                    limit=self._memory_settings.recall_limit,
                    min_score=self._memory_settings.min_score,
                    exclude_tasks=[ctx.task_id, *(t.task_id for t in history.turns)],
                )
        text = render_context(history.summary, history.turns, recalled)
        fixed = await self._journal.fix_context(ctx.tenant_id, ctx.task_id, text)
        if fixed == text:
            await self._journal.event(
                ctx.tenant_id,
                ctx.task_id,
                EventType.CONTEXT_PREPARED,
                {
                    "turns": len(history.turns),
                    "summarized": history.summarized,
                    "has_summary": history.summary is not None,
                    "memories": [
                        {"id": r.memory.id, "concern": r.memory.concern.value, "score": r.score}
                        for r in recalled
                    ],
                },
            )
        return fixed

    async def _history(self, ctx: CallContext, session_id: str) -> _History:
        """The turns finished before this task's question, within the limits; the
        oldest beyond them folded into the session's summary first."""
        state = await self._sessions.state(ctx.tenant_id, session_id)
        asked_at = await self._sessions.question_id(ctx.tenant_id, ctx.task_id)
        turns = [t for t in state.turns if asked_at is None or t.answer_id < asked_at]
        keep = self._kept(turns)
        folded, turns = turns[: len(turns) - keep], turns[len(turns) - keep :]
        summary = state.summary
        if folded:
            summary = await self._summarize(ctx, summary, folded)
            await self._sessions.save_summary(
                ctx.tenant_id, session_id, summary, through=folded[-1].answer_id
            )
        return _History(summary=summary, turns=turns, summarized=len(folded))

    def _kept(self, turns: list[SessionTurn]) -> int:
        """How many of the latest turns stay verbatim: at most ``max_turns`` and
        ``history_tokens``, and always the last one."""
        settings = self._session_settings
        kept, tokens = 0, 0
        for turn in reversed(turns):
            tokens += _tokens(turn)
            if kept and (kept >= settings.max_turns or tokens > settings.history_tokens):
                break
            kept += 1
        return kept

    async def _summarize(
        self, ctx: CallContext, summary: str | None, turns: list[SessionTurn]
    ) -> str:
        lines = "\n".join(f"User: {t.question}\nAssistant: {t.answer}" for t in turns)
        messages = (
            ChatMessage(role="system", content=SUMMARY_PROMPT),
            ChatMessage(
                role="user",
                content=f"Summary so far:\n{summary or '(none)'}\n\nNew turns:\n{lines}",
            ),
        )
        metered = await self._llm.call(
            ctx, messages, tier=self._session_settings.summary_tier, index=SUMMARY_CALL_INDEX
        )
        await self._journal.llm_call(ctx.tenant_id, ctx.task_id, metered.record)
        metrics.SESSION_SUMMARIES.inc()
        return metered.response.content


class MemoryKeeper:
    """Remembers completed tasks and forgets deleted sessions."""

    def __init__(self, sessions: SqlSessionStore, vectors: VectorMemory | None) -> None:
        self._sessions = sessions
        self._vectors = vectors

    async def task_completed(self, task: Task) -> None:
        """Remember a completed task's question and answer (the same ids again on a
        re-delivery: no duplicates)."""
        if task.session_id is not None:
            await self._sessions.changed(task.tenant_id, task.session_id)
        if self._vectors is None or not task.result:
            return
        with _counted("remember"):
            await self._remember(self._vectors, task)

    @staticmethod
    async def _remember(vectors: VectorMemory, task: Task) -> None:
        text = f"Question: {task.query}\nAnswer: {task.result}"
        concerns = [Concern.TASKS] if task.session_id is None else [Concern.TASKS, Concern.SESSION]
        for concern in concerns:
            await vectors.remember(
                task.tenant_id,
                concern,
                text,
                key=task.id,
                session_id=task.session_id,
                task_id=task.id,
            )

    async def session_deleted(self, tenant_id: str, session_id: str) -> None:
        """Forget what the session's tasks left in memory."""
        if self._vectors is None:
            return
        for concern in (Concern.SESSION, Concern.TASKS):
            await self._vectors.forget(tenant_id, concern, session_id=session_id)


@contextlib.contextmanager
def _counted(operation: str) -> Iterator[None]:
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        metrics.MEMORY_OPERATIONS.labels(operation=operation, outcome=outcome).inc()


def render_context(summary: str | None, turns: list[SessionTurn], recalled: list[Recalled]) -> str:
    """The context block put before a session task's question ("" when there is none)."""
    parts: list[str] = []
    if summary or turns:
        lines = ["## The conversation so far (this task continues it)"]
        if summary:
            lines.append(f"Summary of earlier turns: {summary}")
        for turn in turns:
            lines += [f"User: {turn.question}", f"Assistant: {turn.answer}"]
        parts.append("\n".join(lines))
    if recalled:
        lines = ["## Memories that may help (earlier work; check before relying on them)"]
        for r in recalled:
            text = r.memory.text[:_RECALLED_CHARS]
            lines.append(f"- [{r.memory.concern.value} {r.memory.created_at:%Y-%m-%d}] {text}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _tokens(turn: SessionTurn) -> int:
    return estimate_prompt_tokens(
        (
            ChatMessage(role="user", content=turn.question),
            ChatMessage(role="assistant", content=turn.answer),
        )
    )
