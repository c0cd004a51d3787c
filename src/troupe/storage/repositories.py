"""Reads and writes of tasks, their events and token usage.

Every method takes ``tenant_id``: an unscoped query cannot be written by accident.
Every write that also emits events does both in one transaction, so a reader of the
event stream never sees an event whose effect is not yet visible (or the reverse).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Result, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from troupe.domain import (
    TERMINAL_EVENT_FOR_STATUS,
    EventType,
    NodeRun,
    NodeStatus,
    Plan,
    Strategy,
    Task,
    TaskError,
    TaskEvent,
    TaskStatus,
    Usage,
)
from troupe.errors import NotFound
from troupe.storage.tables import EventRow, SessionRow, TaskNodeRow, TaskRow, TokenUsageRow

_TERMINAL = [s.value for s in TaskStatus if s.terminal]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class NewTask:
    id: str
    tenant_id: str
    session_id: str | None
    query: str
    strategy: Strategy
    token_budget: int
    workflow_id: str


@dataclass(frozen=True, slots=True)
class LLMCallRecord:
    """One provider call as it is metered; ``call_key`` is unique per call attempt."""

    call_key: str
    provider: str
    model: str
    usage: Usage
    cached_tokens: int
    latency_ms: int
    node_id: str | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    """What finish did: the ended task (None if it had ended before) and the call."""

    task: Task | None
    call_stored: bool


@dataclass(frozen=True, slots=True)
class NodeStart:
    """Tokens the task has spent when a node starts, and the node's output if an
    earlier attempt had finished it."""

    spent: int
    output: str | None


@dataclass(frozen=True, slots=True)
class TaskPage:
    items: list[Task]
    next_cursor: int | None


class SqlTaskStore:
    """Tasks, events and usage in SQLite or PostgreSQL through SQLAlchemy."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        # SQLite admits one writer at a time, and writers that collide wait in its busy
        # handler, which sleeps in steps of up to 100 ms. Queueing writers in the event
        # loop instead costs microseconds; readers still run beside them (WAL).
        self._write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncSession]:
        """A write transaction (committed on exit), one at a time on SQLite."""
        if self._write_lock is None:
            async with self._sessions.begin() as db:
                yield db
            return
        async with self._write_lock, self._sessions.begin() as db:
            yield db

    async def aclose(self) -> None:
        await self._engine.dispose()

    async def ping(self) -> None:
        async with self._sessions() as db:
            await db.execute(select(1))

    async def create_task(self, new: NewTask) -> Task:
        """Insert a queued task (and its session if new) with its ``submitted`` event."""
        now = _now()
        async with self._writing() as db:
            if new.session_id is not None:
                await self._touch_session(db, new.tenant_id, new.session_id, now)
            row = TaskRow(
                id=new.id,
                tenant_id=new.tenant_id,
                session_id=new.session_id,
                query=new.query,
                strategy=new.strategy.value,
                status=TaskStatus.QUEUED.value,
                token_budget=new.token_budget,
                workflow_id=new.workflow_id,
                prompt_tokens=0,
                completion_tokens=0,
                cost_micro_usd=0,
                event_seq=0,
                created_at=now,
            )
            db.add(row)
            await db.flush()
            await self._append(
                db,
                new.tenant_id,
                new.id,
                EventType.SUBMITTED,
                {"strategy": new.strategy.value, "token_budget": new.token_budget},
            )
        return _task(row)

    async def _touch_session(
        self, db: AsyncSession, tenant_id: str, session_id: str, now: datetime
    ) -> None:
        existing = await db.get(SessionRow, session_id, with_for_update=True)
        if existing is None:
            db.add(SessionRow(id=session_id, tenant_id=tenant_id, created_at=now, updated_at=now))
            await db.flush()
        elif existing.tenant_id != tenant_id:
            # Session ids are global; someone else's id is simply not yours to use.
            raise NotFound(f"session {session_id} not found", code="session_not_found")
        else:
            existing.updated_at = now

    async def get_task(self, tenant_id: str, task_id: str) -> Task:
        async with self._sessions() as db:
            row = await self._task_row(db, tenant_id, task_id)
            return _task(row)

    async def _task_row(
        self, db: AsyncSession, tenant_id: str, task_id: str, *, lock: bool = False
    ) -> TaskRow:
        query = select(TaskRow).where(TaskRow.id == task_id, TaskRow.tenant_id == tenant_id)
        row = (await db.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
        if row is None:
            raise NotFound(f"task {task_id} not found", code="task_not_found")
        return row

    async def list_tasks(
        self,
        tenant_id: str,
        *,
        status: TaskStatus | None = None,
        session_id: str | None = None,
        limit: int = 20,
        before: int | None = None,
    ) -> TaskPage:
        """Newest first; ``before`` is the cursor a previous page returned."""
        query = select(TaskRow).where(TaskRow.tenant_id == tenant_id)
        if status is not None:
            query = query.where(TaskRow.status == status.value)
        if session_id is not None:
            query = query.where(TaskRow.session_id == session_id)
        if before is not None:
            query = query.where(TaskRow.seq < before)
        query = query.order_by(TaskRow.seq.desc()).limit(limit + 1)
        async with self._sessions() as db:
            rows = list((await db.execute(query)).scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        return TaskPage(items=[_task(r) for r in rows], next_cursor=rows[-1].seq if more else None)

    async def mark_started(self, tenant_id: str, task_id: str, *, attempt: int) -> Task:
        """queued → running (or a retry note when already running); ended tasks stay."""
        return await self.move(
            tenant_id, task_id, TaskStatus.RUNNING, EventType.STARTED, {"attempt": attempt}
        )

    async def move(
        self,
        tenant_id: str,
        task_id: str,
        status: TaskStatus,
        event: EventType,
        data: dict[str, Any],
    ) -> Task:
        """A non-terminal status change with its event; an ended task stays as it is."""
        if status.terminal:
            raise ValueError(f"{status} is terminal: use finish")
        async with self._writing() as db:
            row = await self._task_row(db, tenant_id, task_id, lock=True)
            if TaskStatus(row.status).terminal:
                return _task(row)
            row.status = status.value
            if row.started_at is None:
                row.started_at = _now()
            await self._append(db, tenant_id, task_id, event, data)
            return _task(row)

    async def record_llm_call(self, tenant_id: str, task_id: str, call: LLMCallRecord) -> bool:
        """Store one metered call and add it to the task's totals; False if already stored."""
        try:
            async with self._writing() as db:
                if await self._call_known(db, call.call_key):
                    return False
                await self._add_call(db, tenant_id, task_id, call)
        except IntegrityError:
            # A concurrent writer stored the same call first; ours is the duplicate.
            return False
        return True

    async def _call_known(self, db: AsyncSession, call_key: str) -> bool:
        count = await db.scalar(
            select(func.count())
            .select_from(TokenUsageRow)
            .where(TokenUsageRow.call_key == call_key)
        )
        return bool(count)

    async def _add_call(
        self, db: AsyncSession, tenant_id: str, task_id: str, call: LLMCallRecord
    ) -> None:
        db.add(
            TokenUsageRow(
                call_key=call.call_key,
                task_id=task_id,
                tenant_id=tenant_id,
                node_id=call.node_id,
                provider=call.provider,
                model=call.model,
                prompt_tokens=call.usage.prompt_tokens,
                completion_tokens=call.usage.completion_tokens,
                cached_tokens=call.cached_tokens,
                cost_micro_usd=call.usage.cost_micro_usd,
                latency_ms=call.latency_ms,
                created_at=_now(),
            )
        )
        await db.execute(
            update(TaskRow)
            .where(TaskRow.id == task_id, TaskRow.tenant_id == tenant_id)
            .values(
                prompt_tokens=TaskRow.prompt_tokens + call.usage.prompt_tokens,
                completion_tokens=TaskRow.completion_tokens + call.usage.completion_tokens,
                cost_micro_usd=TaskRow.cost_micro_usd + call.usage.cost_micro_usd,
            )
            .execution_options(synchronize_session=False)
        )
        data: dict[str, Any] = {
            "node_id": call.node_id,
            "provider": call.provider,
            "model": call.model,
            "prompt_tokens": call.usage.prompt_tokens,
            "completion_tokens": call.usage.completion_tokens,
            "cost_micro_usd": call.usage.cost_micro_usd,
            "latency_ms": call.latency_ms,
        }
        await self._append(db, tenant_id, task_id, EventType.LLM_CALL, data)

    async def finish(
        self,
        tenant_id: str,
        task_id: str,
        status: TaskStatus,
        *,
        result: str | None = None,
        error: TaskError | None = None,
        call: LLMCallRecord | None = None,
    ) -> Finish:
        """Move a task to a terminal status once, storing the call that produced the
        result in the same transaction (a spent call is stored even if the task has
        ended meanwhile)."""
        if not status.terminal:
            raise ValueError(f"{status} is not a terminal status")
        try:
            return await self._finish(tenant_id, task_id, status, result, error, call)
        except IntegrityError:
            # A concurrent writer stored the same call first: finish without it.
            ended = await self._finish(tenant_id, task_id, status, result, error, None)
            return Finish(task=ended.task, call_stored=False)

    async def _finish(
        self,
        tenant_id: str,
        task_id: str,
        status: TaskStatus,
        result: str | None,
        error: TaskError | None,
        call: LLMCallRecord | None,
    ) -> Finish:
        async with self._writing() as db:
            call_stored = call is not None and not await self._call_known(db, call.call_key)
            if call is not None and call_stored:
                await self._add_call(db, tenant_id, task_id, call)
            row = await self._task_row(db, tenant_id, task_id, lock=True)
            if TaskStatus(row.status).terminal:
                return Finish(task=None, call_stored=call_stored)
            now = _now()
            row.status = status.value
            row.result = result
            row.error_code = error.code if error else None
            row.error_message = error.message if error else None
            row.finished_at = now
            data: dict[str, Any] = {
                "status": status.value,
                "usage": {
                    "prompt_tokens": row.prompt_tokens,
                    "completion_tokens": row.completion_tokens,
                    "cost_micro_usd": row.cost_micro_usd,
                },
            }
            if error is not None:
                data["error"] = error.model_dump()
            if status is not TaskStatus.COMPLETED:
                await self._close_open_nodes(db, tenant_id, task_id, now)
            await self._append(db, tenant_id, task_id, TERMINAL_EVENT_FOR_STATUS[status], data)
            return Finish(task=_task(row), call_stored=call_stored)

    async def _close_open_nodes(
        self, db: AsyncSession, tenant_id: str, task_id: str, now: datetime
    ) -> None:
        """Nodes still pending or running when the task ends early will never finish."""
        await db.execute(
            update(TaskNodeRow)
            .where(
                TaskNodeRow.task_id == task_id,
                TaskNodeRow.tenant_id == tenant_id,
                TaskNodeRow.status.in_([NodeStatus.PENDING.value, NodeStatus.RUNNING.value]),
            )
            .values(status=NodeStatus.CANCELLED.value, finished_at=now)
            .execution_options(synchronize_session=False)
        )

    async def set_strategy(
        self, tenant_id: str, task_id: str, strategy: Strategy, data: dict[str, Any]
    ) -> None:
        """Record the strategy routing chose, with the strategy.chosen event."""
        async with self._writing() as db:
            await db.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.tenant_id == tenant_id)
                .values(strategy=strategy.value)
                .execution_options(synchronize_session=False)
            )
            await self._append(
                db,
                tenant_id,
                task_id,
                EventType.STRATEGY_CHOSEN,
                {"strategy": strategy.value, **data},
            )

    async def save_plan(self, tenant_id: str, task_id: str, plan: Plan) -> None:
        """Record the validated plan, its nodes as pending, and the plan.created event."""
        async with self._writing() as db:
            await db.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.tenant_id == tenant_id)
                .values(plan=plan.model_dump(mode="json"), strategy=Strategy.DAG.value)
                .execution_options(synchronize_session=False)
            )
            known = set(
                (
                    await db.execute(
                        select(TaskNodeRow.node_id).where(
                            TaskNodeRow.task_id == task_id, TaskNodeRow.tenant_id == tenant_id
                        )
                    )
                ).scalars()
            )
            for position, node in enumerate(plan.nodes):
                if node.id in known:
                    continue  # a retried write: the nodes are there already
                db.add(
                    TaskNodeRow(
                        task_id=task_id,
                        tenant_id=tenant_id,
                        node_id=node.id,
                        position=position,
                        role=node.role,
                        tier=node.tier,
                        depends_on=list(node.depends_on),
                        status=NodeStatus.PENDING.value,
                        prompt_tokens=0,
                        completion_tokens=0,
                        cost_micro_usd=0,
                        attempts=0,
                    )
                )
            await self._append(
                db,
                tenant_id,
                task_id,
                EventType.PLAN_CREATED,
                {"plan": plan.model_dump(mode="json")},
            )

    async def node_started(
        self, tenant_id: str, task_id: str, node_id: str, *, attempt: int
    ) -> NodeStart:
        """Mark the node running, unless an earlier attempt already finished it (then its
        output is returned and nothing changes); also says what the task has spent."""
        node = (
            TaskNodeRow.task_id == task_id,
            TaskNodeRow.tenant_id == tenant_id,
            TaskNodeRow.node_id == node_id,
        )
        async with self._writing() as db:
            moved = await db.execute(
                update(TaskNodeRow)
                .where(*node, TaskNodeRow.status != NodeStatus.COMPLETED.value)
                .values(
                    status=NodeStatus.RUNNING.value,
                    attempts=attempt,
                    started_at=func.coalesce(TaskNodeRow.started_at, _now()),
                )
                .execution_options(synchronize_session=False)
            )
            output: str | None = None
            if _rowcount(moved) == 0:  # finished by an earlier attempt (or unknown)
                output = await db.scalar(select(TaskNodeRow.output).where(*node))
                if output is None:
                    raise NotFound(f"node {node_id} of task {task_id} not found")
            else:
                await self._append(
                    db,
                    tenant_id,
                    task_id,
                    EventType.NODE_STARTED,
                    {"node_id": node_id, "attempt": attempt},
                )
            spent = await db.scalar(
                select(TaskRow.prompt_tokens + TaskRow.completion_tokens).where(
                    TaskRow.id == task_id, TaskRow.tenant_id == tenant_id
                )
            )
            return NodeStart(spent=int(spent or 0), output=output)

    async def node_completed(
        self, tenant_id: str, task_id: str, node_id: str, output: str, call: LLMCallRecord
    ) -> bool:
        """The node's metered call and its output, together; False if already stored."""
        try:
            async with self._writing() as db:
                if await self._call_known(db, call.call_key):
                    return False
                await self._add_call(db, tenant_id, task_id, call)
                await db.execute(
                    update(TaskNodeRow)
                    .where(
                        TaskNodeRow.task_id == task_id,
                        TaskNodeRow.tenant_id == tenant_id,
                        TaskNodeRow.node_id == node_id,
                    )
                    .values(
                        status=NodeStatus.COMPLETED.value,
                        output=output,
                        prompt_tokens=TaskNodeRow.prompt_tokens + call.usage.prompt_tokens,
                        completion_tokens=TaskNodeRow.completion_tokens
                        + call.usage.completion_tokens,
                        cost_micro_usd=TaskNodeRow.cost_micro_usd + call.usage.cost_micro_usd,
                        finished_at=_now(),
                    )
                    .execution_options(synchronize_session=False)
                )
                summary = output if len(output) <= 200 else output[:199] + "…"
                await self._append(
                    db,
                    tenant_id,
                    task_id,
                    EventType.NODE_COMPLETED,
                    {
                        "node_id": node_id,
                        "output_summary": summary,
                        "prompt_tokens": call.usage.prompt_tokens,
                        "completion_tokens": call.usage.completion_tokens,
                        "cost_micro_usd": call.usage.cost_micro_usd,
                    },
                )
        except IntegrityError:
            return False
        return True

    async def nodes_ended_without_output(
        self,
        tenant_id: str,
        task_id: str,
        *,
        failed: dict[str, TaskError],
        skipped: dict[str, str],
    ) -> None:
        """Record failed nodes (with their error) and skipped ones (with the reason)."""
        async with self._writing() as db:
            now = _now()
            for node_id, error in failed.items():
                await self._end_node(db, tenant_id, task_id, node_id, NodeStatus.FAILED, error, now)
                await self._append(
                    db,
                    tenant_id,
                    task_id,
                    EventType.NODE_FAILED,
                    {"node_id": node_id, "error": error.model_dump()},
                )
            for node_id, reason in skipped.items():
                await self._end_node(db, tenant_id, task_id, node_id, NodeStatus.SKIPPED, None, now)
                await self._append(
                    db,
                    tenant_id,
                    task_id,
                    EventType.NODE_SKIPPED,
                    {"node_id": node_id, "reason": reason},
                )

    async def _end_node(
        self,
        db: AsyncSession,
        tenant_id: str,
        task_id: str,
        node_id: str,
        status: NodeStatus,
        error: TaskError | None,
        now: datetime,
    ) -> None:
        await db.execute(
            update(TaskNodeRow)
            .where(
                TaskNodeRow.task_id == task_id,
                TaskNodeRow.tenant_id == tenant_id,
                TaskNodeRow.node_id == node_id,
                TaskNodeRow.status.in_([NodeStatus.PENDING.value, NodeStatus.RUNNING.value]),
            )
            .values(
                status=status.value,
                error_code=error.code if error else None,
                error_message=error.message if error else None,
                finished_at=now,
            )
            .execution_options(synchronize_session=False)
        )

    async def task_nodes(self, tenant_id: str, task_id: str) -> list[NodeRun]:
        query = (
            select(TaskNodeRow)
            .where(TaskNodeRow.task_id == task_id, TaskNodeRow.tenant_id == tenant_id)
            .order_by(TaskNodeRow.position)
        )
        async with self._sessions() as db:
            return [_node_run(r) for r in (await db.execute(query)).scalars()]

    async def append_event(
        self, tenant_id: str, task_id: str, type_: EventType, data: dict[str, Any]
    ) -> TaskEvent:
        async with self._writing() as db:
            return await self._append(db, tenant_id, task_id, type_, data)

    async def events_after(
        self, tenant_id: str, task_id: str, after_seq: int, *, limit: int = 500
    ) -> Sequence[TaskEvent]:
        query = (
            select(EventRow)
            .where(
                EventRow.task_id == task_id,
                EventRow.tenant_id == tenant_id,
                EventRow.seq > after_seq,
            )
            .order_by(EventRow.seq)
            .limit(limit)
        )
        async with self._sessions() as db:
            rows = (await db.execute(query)).scalars()
            return [_event(r) for r in rows]

    async def usage_calls(self, tenant_id: str, task_id: str) -> list[LLMCallRecord]:
        query = (
            select(TokenUsageRow)
            .where(TokenUsageRow.task_id == task_id, TokenUsageRow.tenant_id == tenant_id)
            .order_by(TokenUsageRow.id)
        )
        async with self._sessions() as db:
            rows = (await db.execute(query)).scalars()
            return [
                LLMCallRecord(
                    call_key=r.call_key,
                    provider=r.provider,
                    model=r.model,
                    usage=Usage(
                        prompt_tokens=r.prompt_tokens,
                        completion_tokens=r.completion_tokens,
                        cost_micro_usd=r.cost_micro_usd,
                    ),
                    cached_tokens=r.cached_tokens,
                    latency_ms=r.latency_ms,
                    node_id=r.node_id,
                )
                for r in rows
            ]

    async def _next_seq(self, db: AsyncSession, tenant_id: str, task_id: str) -> int:
        # The UPDATE takes the task's row lock until commit: events of one task are
        # numbered and committed in one order across processes.
        seq = await db.scalar(
            update(TaskRow)
            .where(TaskRow.id == task_id, TaskRow.tenant_id == tenant_id)
            .values(event_seq=TaskRow.event_seq + 1)
            .returning(TaskRow.event_seq)
            .execution_options(synchronize_session=False)
        )
        if seq is None:
            raise NotFound(f"task {task_id} not found", code="task_not_found")
        return int(seq)

    async def _append(
        self,
        db: AsyncSession,
        tenant_id: str,
        task_id: str,
        type_: EventType,
        data: dict[str, Any],
    ) -> TaskEvent:
        seq = await self._next_seq(db, tenant_id, task_id)
        row = EventRow(
            task_id=task_id,
            tenant_id=tenant_id,
            seq=seq,
            type=type_.value,
            data=data,
            created_at=_now(),
        )
        db.add(row)
        await db.flush()
        return _event(row)


def _rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE matched (the async result types hide the attribute from mypy)."""
    count: int = getattr(result, "rowcount", 0)
    return count


def _error(row: TaskRow | TaskNodeRow) -> TaskError | None:
    if row.error_code is None:
        return None
    return TaskError(code=row.error_code, message=row.error_message or "")


def _usage(row: TaskRow | TaskNodeRow) -> Usage:
    return Usage(
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cost_micro_usd=row.cost_micro_usd,
    )


def _task(row: TaskRow) -> Task:
    return Task(
        id=row.id,
        tenant_id=row.tenant_id,
        session_id=row.session_id,
        query=row.query,
        strategy=Strategy(row.strategy),
        status=TaskStatus(row.status),
        token_budget=row.token_budget,
        result=row.result,
        error=_error(row),
        usage=_usage(row),
        workflow_id=row.workflow_id,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        plan=Plan.model_validate(row.plan) if row.plan is not None else None,
    )


def _node_run(row: TaskNodeRow) -> NodeRun:
    return NodeRun(
        node_id=row.node_id,
        role=row.role,
        tier=row.tier,
        depends_on=tuple(row.depends_on),
        status=NodeStatus(row.status),
        output=row.output,
        error=_error(row),
        usage=_usage(row),
        attempts=row.attempts,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _event(row: EventRow) -> TaskEvent:
    return TaskEvent(
        task_id=row.task_id,
        seq=row.seq,
        type=EventType(row.type),
        data=row.data,
        created_at=row.created_at,
    )
