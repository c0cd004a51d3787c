"""Reads and writes of tasks, their events and token usage.

Every method takes ``tenant_id``: an unscoped query cannot be written by accident.
Every write that also emits events does both in one transaction, so a reader of the
event stream never sees an event whose effect is not yet visible (or the reverse).

Each method is one transaction: a plain function of a ``Connection`` (Core
statements, no ORM session: the unit of work costs more CPU than the statements),
run by ``Transactions``, inline on SQLite and through the async driver on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import (
    Connection,
    Integer,
    Row,
    bindparam,
    cast,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from troupe.domain import (
    TERMINAL_EVENT_FOR_STATUS,
    AgentStep,
    BeliefState,
    EventType,
    NodeRun,
    NodeStatus,
    Plan,
    Strategy,
    Task,
    TaskError,
    TaskEvent,
    TaskStatus,
    ToolCallRun,
    Usage,
)
from troupe.errors import NotFound, RateLimited
from troupe.storage import ledger
from troupe.storage.batching import Batcher
from troupe.storage.database import Transactions
from troupe.storage.ledger import Ask, Budget, Counter, Grant, Settled
from troupe.storage.tables import (
    UtcDateTime,
    agent_steps,
    events,
    messages,
    sessions,
    task_nodes,
    tasks,
    token_usage,
)

_OPEN_NODE = [NodeStatus.PENDING.value, NodeStatus.RUNNING.value]

_T = TypeVar("_T")
_P = ParamSpec("_P")

# Told of the events of a task that a transaction of this process just committed.
EventSink = Callable[[str, Sequence[TaskEvent]], None]

# Where, in a connection's info, a store transaction collects the events it appends.
_APPENDED = "troupe.appended_events"


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
    user_id: str | None = None
    api_key_id: str | None = None
    cost_budget_micro_usd: int | None = None
    node_token_budget: int | None = None
    trace_id: str | None = None


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
    cache_hit: bool = False  # answered by the prompt cache: zero tokens, zero cost


@dataclass(frozen=True, slots=True)
class Finish:
    """What finish did: the ended task (None if it had ended before) and the call."""

    task: Task | None
    call_stored: bool


@dataclass(frozen=True, slots=True)
class NodeStart:
    """How a node starts: its output if an earlier attempt had finished it."""

    output: str | None


@dataclass(frozen=True, slots=True)
class SessionOwner:
    user_id: str | None  # None: begun by a key without a user, shared within the tenant


@dataclass(frozen=True, slots=True)
class DayBudgetStatus:
    """A tenant's UTC day: its limits (None: none) and what is used and reserved."""

    day: str
    limit_tokens: int | None
    limit_micro_usd: int | None
    used_tokens: int
    reserved_tokens: int
    used_micro_usd: int
    reserved_micro_usd: int
    alert_threshold: float

    @property
    def exhausted(self) -> bool:
        tokens, usd = self.limit_tokens, self.limit_micro_usd
        return (tokens is not None and self.used_tokens + self.reserved_tokens >= tokens) or (
            usd is not None and self.used_micro_usd + self.reserved_micro_usd >= usd
        )

    @property
    def utilization(self) -> float | None:
        """The larger used share of the day's limits; None without limits."""
        shares = [
            used / limit
            for used, limit in (
                (self.used_tokens, self.limit_tokens),
                (self.used_micro_usd, self.limit_micro_usd),
            )
            if limit
        ]
        return max(shares) if shares else None


def day_counter(tenant_id: str, day: str) -> str:
    """The counter id of a tenant's UTC day (``YYYY-MM-DD``)."""
    return f"day:{tenant_id}:{day}"


@dataclass(frozen=True, slots=True)
class UsageLine:
    """Provider calls of a group (a day, a model, a session) and what they used."""

    key: tuple[str | None, ...]
    calls: int
    cache_hits: int
    prompt_tokens: int
    completion_tokens: int
    cost_micro_usd: int


@dataclass(frozen=True, slots=True)
class UsageSummary:
    total: UsageLine
    by_day: list[UsageLine]  # key: ("YYYY-MM-DD",), UTC
    by_model: list[UsageLine]  # key: (provider, model)
    by_session: list[UsageLine]  # key: (session_id or None,)


@dataclass(frozen=True, slots=True)
class Started:
    task: Task
    first: bool  # this was the task's first start (it left the queue now)


@dataclass(frozen=True, slots=True)
class TaskPage:
    items: list[Task]
    next_cursor: int | None


class SqlTaskStore:
    """Tasks, events and usage in SQLite or PostgreSQL through SQLAlchemy Core."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        alert_threshold: float = 0.8,
        on_events: EventSink | None = None,
    ) -> None:
        self._tx = Transactions(engine)
        # Handed the events each write appended, once committed (the event fan-out, so
        # that this process's stream readers need not read them back).
        self._on_events = on_events
        # Share of a tenant's daily limit whose crossing raises a budget.alert event.
        self._threshold = alert_threshold
        # PostgreSQL: the ledger's own reserves and settles go out in batches, one commit
        # for all that wait (group commit). SQLite commits are cheap: each runs inline.
        self._ledger_batches: Batcher[ledger.LedgerOp, ledger.LedgerAnswer] | None = None
        if self._tx.dialect == "postgresql":
            self._ledger_batches = Batcher(self._send_ledger_batch)

    async def _send_ledger_batch(
        self, ops: list[ledger.LedgerOp]
    ) -> list[ledger.LedgerAnswer | Exception]:
        return await self._tx.write(ledger.run_batch, ops)

    async def _ledger(self, op: ledger.LedgerOp) -> ledger.LedgerAnswer:
        """One ledger operation: in the next batch on PostgreSQL, inline on SQLite."""
        if self._ledger_batches is not None:
            return await self._ledger_batches.run(op)
        return await self._tx.write_lean(ledger.apply, op)

    async def _write(
        self, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kw: _P.kwargs
    ) -> _T:
        """``fn(conn, ...)`` as one write transaction; the events it appended go to
        ``on_events`` after the commit (never for a transaction that failed)."""
        if self._on_events is None:
            return await self._tx.write(fn, *args, **kw)
        appended: list[TaskEvent] = []

        def collecting(conn: Connection) -> _T:
            conn.info[_APPENDED] = appended
            try:
                return fn(conn, *args, **kw)
            finally:
                del conn.info[_APPENDED]

        result = await self._tx.write(collecting)
        by_task: dict[str, list[TaskEvent]] = {}
        for event in appended:
            by_task.setdefault(event.task_id, []).append(event)
        for task_id, committed in by_task.items():
            self._on_events(task_id, committed)
        return result

    async def aclose(self) -> None:
        await self._tx.aclose()

    async def ping(self) -> None:
        await self._tx.read(lambda conn: conn.execute(select(1)).scalar_one())

    async def create_task(
        self,
        new: NewTask,
        *,
        max_active: int | None = None,
        key_max_active: int | None = None,
        day: Budget | None = None,
    ) -> Task:
        """Insert a queued task (and its session if new) with its ``submitted`` event.

        ``day``: the tenant's budget for today; refuse (RateLimited, ``budget_exhausted``)
        when it is used up. ``max_active``: refuse (RateLimited, ``too_many_tasks``) when
        the tenant already has that many unfinished tasks; ``key_max_active`` likewise
        for the task's API key. Checked in the same transaction, serialized per tenant,
        so concurrent submissions cannot slip past it together.
        """
        postgres = self._tx.dialect == "postgresql"
        limits = (max_active, key_max_active)
        return await self._write(_create_task, new, _now(), limits, postgres, day)

    async def session_owner(self, tenant_id: str, session_id: str) -> SessionOwner | None:
        """Who began the tenant's session (None: no such session of this tenant)."""
        query = select(sessions.c.user_id).where(
            sessions.c.id == session_id, sessions.c.tenant_id == tenant_id
        )
        rows = await self._tx.read(lambda conn: conn.execute(query).all())
        return SessionOwner(user_id=rows[0].user_id) if rows else None

    async def set_context(self, tenant_id: str, task_id: str, context: str) -> str:
        """Fix what the task's agents are told of its session and memory, once: the
        first writer wins, and every later caller gets the first one's text."""

        def fix(conn: Connection) -> str:
            conn.execute(
                update(tasks)
                .where(
                    tasks.c.id == task_id, tasks.c.tenant_id == tenant_id, tasks.c.context.is_(None)
                )
                .values(context=context)
            )
            return str(_task_row(conn, tenant_id, task_id).context)

        return await self._write(fix)

    async def get_task(self, tenant_id: str, task_id: str) -> Task:
        return _task(await self._tx.read(_task_row, tenant_id, task_id))

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
        query = select(tasks).where(tasks.c.tenant_id == tenant_id)
        if status is not None:
            query = query.where(tasks.c.status == status.value)
        if session_id is not None:
            query = query.where(tasks.c.session_id == session_id)
        if before is not None:
            query = query.where(tasks.c.seq < before)
        query = query.order_by(tasks.c.seq.desc()).limit(limit + 1)
        rows = await self._tx.read(lambda conn: list(conn.execute(query)))
        more = len(rows) > limit
        rows = rows[:limit]
        return TaskPage(items=[_task(r) for r in rows], next_cursor=rows[-1].seq if more else None)

    async def mark_started(self, tenant_id: str, task_id: str, *, attempt: int) -> Started:
        """queued → running (or a retry note when already running); ended tasks stay."""
        data = {"attempt": attempt}
        return await self._write(
            _start, tenant_id, task_id, TaskStatus.RUNNING, EventType.STARTED, data
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
        started = await self._write(_start, tenant_id, task_id, status, event, data)
        return started.task

    async def record_llm_call(self, tenant_id: str, task_id: str, call: LLMCallRecord) -> bool:
        """Store one metered call and add it to the task's totals; False if already stored."""
        try:
            return await self._write(_record_call, tenant_id, task_id, call, self._threshold)
        except IntegrityError:
            # A concurrent writer stored the same call first; ours is the duplicate.
            return False

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
            return await self._write(
                _finish, tenant_id, task_id, status, result, error, call, self._threshold
            )
        except IntegrityError:
            # A concurrent writer stored the same call first: finish without it.
            ended = await self._write(
                _finish, tenant_id, task_id, status, result, error, None, self._threshold
            )
            return Finish(task=ended.task, call_stored=False)

    async def reserve(
        self,
        tenant_id: str,
        task_id: str,
        call_key: str,
        *,
        budgets: Sequence[Budget],
        ask: Ask,
        stale_prefix: str | None = None,
    ) -> Grant:
        """Reserve one call's ``ask`` against every budget in ``budgets`` at once, all or
        none (``storage/ledger.py``); the grant may shorten the answer to what fits.

        BudgetExceeded when not even the prompt and one token of answer fit. Asking
        again with the same key returns the first grant. Reservations held under
        ``stale_prefix`` (earlier attempts of the same activity, which died before
        recording their call) are released first. The grant is settled when the call's
        usage is recorded, or given back by ``release``.
        """
        op = ledger.Reservation(tenant_id, task_id, call_key, budgets, ask, stale_prefix)
        grant = await self._ledger(op)
        assert isinstance(grant, Grant)
        return grant

    async def release(self, tenant_id: str, task_id: str, call_key: str) -> None:
        """Give back a reservation whose call was not made or failed (once; no-op after)."""
        await self._ledger(ledger.Settlement(task_id, call_key, 0, 0))

    async def settle(
        self, tenant_id: str, task_id: str, call_key: str, *, tokens: int, micro_usd: int
    ) -> list[Settled]:
        """Settle a reservation alone, without recording a call: the ledger's own
        operation (recording a call settles its reservation in the same transaction)."""
        settled = await self._ledger(ledger.Settlement(task_id, call_key, tokens, micro_usd))
        assert isinstance(settled, list)
        return settled

    async def counters(self, ids: Sequence[str]) -> dict[str, Counter]:
        """The budget counters of ``ids`` that exist."""
        return await self._tx.read(ledger.counters, ids)

    async def set_strategy(
        self, tenant_id: str, task_id: str, strategy: Strategy, data: dict[str, Any]
    ) -> None:
        """Record the strategy routing chose, with the strategy.chosen event."""
        await self._write(_set_strategy, tenant_id, task_id, strategy, data)

    async def save_plan(self, tenant_id: str, task_id: str, plan: Plan) -> None:
        """Record the validated plan, its nodes as pending, and the plan.created event."""
        await self._write(_save_plan, tenant_id, task_id, plan)

    async def node_started(self, tenant_id: str, task_id: str, node_id: str) -> NodeStart:
        """Mark the node running and count the start, unless an earlier attempt already
        finished it (then its output is returned and nothing changes)."""
        return await self._write(_node_started, tenant_id, task_id, node_id)

    async def node_completed(
        self, tenant_id: str, task_id: str, node_id: str, output: str, call: LLMCallRecord
    ) -> bool:
        """The node's metered call and its output, together; False if already stored."""
        try:
            return await self._write(
                _node_completed, tenant_id, task_id, node_id, output, call, self._threshold
            )
        except IntegrityError:
            return False

    async def nodes_ended_without_output(
        self,
        tenant_id: str,
        task_id: str,
        *,
        failed: dict[str, TaskError],
        skipped: dict[str, str],
    ) -> None:
        """Record failed nodes (with their error) and skipped ones (with the reason)."""
        await self._write(_nodes_ended, tenant_id, task_id, failed, skipped)

    async def task_nodes(self, tenant_id: str, task_id: str) -> list[NodeRun]:
        query = (
            select(task_nodes)
            .where(task_nodes.c.task_id == task_id, task_nodes.c.tenant_id == tenant_id)
            .order_by(task_nodes.c.position)
        )
        return await self._tx.read(lambda conn: [_node_run(r) for r in conn.execute(query)])

    async def record_agent_step(self, tenant_id: str, task_id: str, step: AgentStep) -> None:
        """The step and its react.step event, together. A retried step replaces the row
        of the attempt before it (both attempts' calls stay metered)."""
        await self._write(_record_agent_step, tenant_id, task_id, step)

    async def agent_steps(self, tenant_id: str, task_id: str) -> list[AgentStep]:
        """Every step of the task's tool-using agents, per agent in order."""
        query = (
            select(agent_steps)
            .where(agent_steps.c.task_id == task_id, agent_steps.c.tenant_id == tenant_id)
            .order_by(agent_steps.c.node_id, agent_steps.c.step)
        )
        return await self._tx.read(lambda conn: [_agent_step(r) for r in conn.execute(query)])

    async def append_event(
        self, tenant_id: str, task_id: str, type_: EventType, data: dict[str, Any]
    ) -> TaskEvent:
        appended = await self._write(_append, tenant_id, task_id, [(type_, data)])
        return appended[0]

    async def events_after(
        self, tenant_id: str, task_id: str, after_seq: int, *, limit: int = 500
    ) -> Sequence[TaskEvent]:
        return await self._tx.read(_events_after, tenant_id, task_id, after_seq, limit)

    async def day_budget(self, tenant_id: str, limits: Budget | None = None) -> DayBudgetStatus:
        """The tenant's budget for today (UTC): used and reserved, against ``limits``
        (the counter's own, as last reserved, when None)."""
        day = _now().date().isoformat()
        return await self._tx.read(_day_status, tenant_id, day, limits, self._threshold)

    async def usage_summary(self, tenant_id: str, since: date, until: date) -> UsageSummary:
        """The tenant's metered calls from ``since`` to ``until`` (UTC days, both
        included): in all, per day, per provider and model, per session."""
        start = datetime.combine(since, time(), tzinfo=UTC)
        end = datetime.combine(until + timedelta(days=1), time(), tzinfo=UTC)
        sqlite = self._tx.dialect == "sqlite"
        return await self._tx.read(_usage_summary, tenant_id, start, end, sqlite)

    async def usage_calls(self, tenant_id: str, task_id: str) -> list[LLMCallRecord]:
        query = (
            select(token_usage)
            .where(token_usage.c.task_id == task_id, token_usage.c.tenant_id == tenant_id)
            .order_by(token_usage.c.id)
        )
        return await self._tx.read(lambda conn: [_call_record(r) for r in conn.execute(query)])


# --------------------------------------------------------------------------- statements
# Built once: constructing a statement and deriving its cache key cost more CPU than
# SQLite takes to run it. Parameters are named ``p_*`` (names of columns are reserved
# for the SET clause).

_TASK = (tasks.c.id == bindparam("p_task"), tasks.c.tenant_id == bindparam("p_tenant"))
_NODE = (
    task_nodes.c.task_id == bindparam("p_task"),
    task_nodes.c.tenant_id == bindparam("p_tenant"),
    task_nodes.c.node_id == bindparam("p_node"),
)
_NOW = bindparam("p_now", type_=UtcDateTime())

_SELECT_TASK = select(tasks).where(*_TASK)
_SELECT_TASK_LOCKED = _SELECT_TASK.with_for_update()
_START_TASK = (
    update(tasks)
    .where(*_TASK)
    .values(status=bindparam("p_status"), started_at=func.coalesce(tasks.c.started_at, _NOW))
)
_END_TASK = (
    update(tasks)
    .where(*_TASK)
    .values(
        status=bindparam("p_status"),
        result=bindparam("p_result"),
        error_code=bindparam("p_error_code"),
        error_message=bindparam("p_error_message"),
        finished_at=_NOW,
    )
)
_CANCEL_OPEN_NODES = (
    update(task_nodes)
    .where(
        task_nodes.c.task_id == bindparam("p_task"),
        task_nodes.c.tenant_id == bindparam("p_tenant"),
        task_nodes.c.status.in_(_OPEN_NODE),
    )
    .values(status=NodeStatus.CANCELLED.value, finished_at=_NOW)
)
# Bumping event_seq takes the task's row lock until commit: events of one task are
# numbered and committed in one order across processes.
_NUMBER_EVENTS = (
    update(tasks)
    .where(*_TASK)
    .values(event_seq=tasks.c.event_seq + bindparam("p_count"))
    .returning(tasks.c.event_seq)
)
_INSERT_EVENTS = insert(events)
_EVENTS_AFTER = (
    select(events)
    .where(
        events.c.task_id == bindparam("p_task"),
        events.c.tenant_id == bindparam("p_tenant"),
        events.c.seq > bindparam("p_after"),
    )
    .order_by(events.c.seq)
    .limit(bindparam("p_limit"))
)
_CALL_KNOWN = select(token_usage.c.id).where(token_usage.c.call_key == bindparam("p_key"))
_INSERT_CALL = insert(token_usage)
_ADD_TASK_USAGE = (
    update(tasks)
    .where(*_TASK)
    .values(
        prompt_tokens=tasks.c.prompt_tokens + bindparam("p_prompt"),
        completion_tokens=tasks.c.completion_tokens + bindparam("p_completion"),
        cost_micro_usd=tasks.c.cost_micro_usd + bindparam("p_cost"),
    )
)
_START_NODE = (
    update(task_nodes)
    .where(*_NODE, task_nodes.c.status != NodeStatus.COMPLETED.value)
    .values(
        status=NodeStatus.RUNNING.value,
        # Starts are counted, not taken from Temporal: a local activity rerun after its
        # worker died starts again at attempt 1.
        attempts=task_nodes.c.attempts + 1,
        started_at=func.coalesce(task_nodes.c.started_at, _NOW),
    )
    .returning(task_nodes.c.attempts)
)
_NODE_OUTPUT = select(task_nodes.c.output).where(*_NODE)
_COMPLETE_NODE = (
    update(task_nodes)
    .where(*_NODE)
    .values(
        status=NodeStatus.COMPLETED.value,
        output=bindparam("p_output"),
        prompt_tokens=task_nodes.c.prompt_tokens + bindparam("p_prompt"),
        completion_tokens=task_nodes.c.completion_tokens + bindparam("p_completion"),
        cost_micro_usd=task_nodes.c.cost_micro_usd + bindparam("p_cost"),
        finished_at=_NOW,
    )
)
_END_OPEN_NODE = (
    update(task_nodes)
    .where(*_NODE, task_nodes.c.status.in_(_OPEN_NODE))
    .values(
        status=bindparam("p_status"),
        error_code=bindparam("p_error_code"),
        error_message=bindparam("p_error_message"),
        finished_at=_NOW,
    )
)


def _task_key(tenant_id: str, task_id: str) -> dict[str, Any]:
    return {"p_task": task_id, "p_tenant": tenant_id}


# --------------------------------------------------------------------------- transactions
# Each function below is one transaction's body; it must not commit or roll back.


_ACTIVE_TASKS = select(func.count()).where(
    tasks.c.tenant_id == bindparam("p_tenant"),
    tasks.c.status.in_([s.value for s in TaskStatus if not s.terminal]),
)
_ACTIVE_KEY_TASKS = _ACTIVE_TASKS.where(tasks.c.api_key_id == bindparam("p_key"))


def _create_task(
    conn: Connection,
    new: NewTask,
    now: datetime,
    limits: tuple[int | None, int | None],
    postgres: bool,
    day: Budget | None,
) -> Task:
    if day is not None:
        today = _day_status(conn, new.tenant_id, now.date().isoformat(), day, 1.0)
        if today.exhausted:
            raise day_exhausted(day, now)
    max_active, key_max_active = limits
    if key_max_active is None or new.api_key_id is None:
        key_max_active = None
    if postgres and (max_active is not None or key_max_active is not None):
        # SQLite writers are serialized already (BEGIN IMMEDIATE)
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(new.tenant_id))))
    if max_active is not None:
        active = conn.execute(_ACTIVE_TASKS, {"p_tenant": new.tenant_id}).scalar_one()
        if active >= max_active:
            raise RateLimited(
                f"{active} tasks of this tenant are unfinished; at most {max_active} at once",
                code="too_many_tasks",
                retry_after_s=1.0,
            )
    if key_max_active is not None:
        params = {"p_tenant": new.tenant_id, "p_key": new.api_key_id}
        active = conn.execute(_ACTIVE_KEY_TASKS, params).scalar_one()
        if active >= key_max_active:
            raise RateLimited(
                f"{active} tasks of this API key are unfinished; at most {key_max_active} at once",
                code="too_many_tasks",
                retry_after_s=1.0,
            )
    if new.session_id is not None:
        _touch_session(conn, new.tenant_id, new.session_id, now, new.user_id)
    values: dict[str, Any] = {
        "id": new.id,
        "tenant_id": new.tenant_id,
        "session_id": new.session_id,
        "query": new.query,
        "strategy": new.strategy.value,
        "status": TaskStatus.QUEUED.value,
        "token_budget": new.token_budget,
        "workflow_id": new.workflow_id,
        "user_id": new.user_id,
        "api_key_id": new.api_key_id,
        "cost_budget_micro_usd": new.cost_budget_micro_usd,
        "node_token_budget": new.node_token_budget,
        "trace_id": new.trace_id,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_micro_usd": 0,
        "event_seq": 0,
        "created_at": now,
    }
    conn.execute(insert(tasks), values)
    if new.session_id is not None:
        _add_message(conn, new.tenant_id, new.session_id, new.id, "user", new.query, now)
    data = {"strategy": new.strategy.value, "token_budget": new.token_budget}
    _append(conn, new.tenant_id, new.id, [(EventType.SUBMITTED, data)])
    return _task(_task_row(conn, new.tenant_id, new.id))


def _add_message(
    conn: Connection,
    tenant_id: str,
    session_id: str,
    task_id: str,
    role: str,
    content: str,
    now: datetime,
) -> None:
    conn.execute(
        insert(messages).values(
            tenant_id=tenant_id,
            session_id=session_id,
            task_id=task_id,
            role=role,
            content=content,
            created_at=now,
        )
    )


def _touch_session(
    conn: Connection, tenant_id: str, session_id: str, now: datetime, user_id: str | None
) -> None:
    owner = conn.execute(
        select(sessions.c.tenant_id).where(sessions.c.id == session_id).with_for_update()
    ).scalar_one_or_none()
    if owner is None:
        conn.execute(
            insert(sessions).values(
                id=session_id,
                tenant_id=tenant_id,
                user_id=user_id,
                created_at=now,
                updated_at=now,
            )
        )
    elif owner != tenant_id:
        # Session ids are global; someone else's id is simply not yours to use.
        raise NotFound(f"session {session_id} not found", code="session_not_found")
    else:
        conn.execute(update(sessions).where(sessions.c.id == session_id).values(updated_at=now))


def _task_row(conn: Connection, tenant_id: str, task_id: str, *, lock: bool = False) -> Row[Any]:
    query = _SELECT_TASK_LOCKED if lock else _SELECT_TASK
    row = conn.execute(query, _task_key(tenant_id, task_id)).one_or_none()
    if row is None:
        raise NotFound(f"task {task_id} not found", code="task_not_found")
    return row


def _events_after(
    conn: Connection, tenant_id: str, task_id: str, after_seq: int, limit: int
) -> list[TaskEvent]:
    params = {**_task_key(tenant_id, task_id), "p_after": after_seq, "p_limit": limit}
    return [_event(r) for r in conn.execute(_EVENTS_AFTER, params)]


def _start(
    conn: Connection,
    tenant_id: str,
    task_id: str,
    status: TaskStatus,
    event: EventType,
    data: dict[str, Any],
) -> Started:
    row = _task_row(conn, tenant_id, task_id, lock=True)
    if TaskStatus(row.status).terminal:
        return Started(task=_task(row), first=False)
    key = _task_key(tenant_id, task_id)
    conn.execute(_START_TASK, {**key, "p_status": status.value, "p_now": _now()})
    _append(conn, tenant_id, task_id, [(event, data)])
    return Started(task=_task(_task_row(conn, tenant_id, task_id)), first=row.started_at is None)


def _record_call(
    conn: Connection, tenant_id: str, task_id: str, call: LLMCallRecord, threshold: float
) -> bool:
    if _call_known(conn, call.call_key):
        return False
    alerts = _add_call(conn, tenant_id, task_id, call, threshold)
    _append(conn, tenant_id, task_id, [_call_event(call), *alerts])
    return True


def _call_known(conn: Connection, call_key: str) -> bool:
    return conn.execute(_CALL_KNOWN, {"p_key": call_key}).first() is not None


def _usage_params(usage: Usage) -> dict[str, Any]:
    return {
        "p_prompt": usage.prompt_tokens,
        "p_completion": usage.completion_tokens,
        "p_cost": usage.cost_micro_usd,
    }


def _day_status(
    conn: Connection, tenant_id: str, day: str, limits: Budget | None, threshold: float
) -> DayBudgetStatus:
    counter = day_counter(tenant_id, day)
    return day_status_of(day, ledger.counters(conn, [counter]).get(counter), limits, threshold)


def day_exhausted(day: Budget, now: datetime) -> RateLimited:
    """The refusal of a submission while the tenant's day is used up."""
    midnight = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC)
    return RateLimited(
        f"the tenant's daily budget ({_limits_text(day)}) is used up; it resets "
        f"at {midnight.isoformat()}",
        code="budget_exhausted",
        retry_after_s=(midnight - now).total_seconds(),
    )


def day_status_of(
    day: str, counter: Counter | None, limits: Budget | None, threshold: float
) -> DayBudgetStatus:
    """A tenant's day from its counter, against ``limits`` (else the counter's own)."""
    if limits is not None:
        tokens, usd = limits.tokens, limits.micro_usd
    else:
        tokens = counter.limit_tokens if counter is not None else None
        usd = counter.limit_micro_usd if counter is not None else None
    return DayBudgetStatus(
        day=day,
        limit_tokens=tokens,
        limit_micro_usd=usd,
        used_tokens=counter.used_tokens if counter is not None else 0,
        reserved_tokens=counter.reserved_tokens if counter is not None else 0,
        used_micro_usd=counter.used_micro_usd if counter is not None else 0,
        reserved_micro_usd=counter.reserved_micro_usd if counter is not None else 0,
        alert_threshold=threshold,
    )


def _limits_text(budget: Budget) -> str:
    parts = []
    if budget.tokens is not None:
        parts.append(f"{budget.tokens} tokens")
    if budget.micro_usd is not None:
        parts.append(f"{budget.micro_usd} micro-dollars")
    return " and ".join(parts) or "no limit"


def _add_call(
    conn: Connection, tenant_id: str, task_id: str, call: LLMCallRecord, threshold: float
) -> list[tuple[EventType, dict[str, Any]]]:
    """The call's usage row and the task's totals, settling the call's reservation in the
    same transaction. Returns the budget alert this call raised, if it took its tenant's
    day over the threshold; its events are the caller's to append."""
    settled = ledger.settle(
        conn,
        task_id=task_id,
        call_key=call.call_key,
        tokens=call.usage.total_tokens,
        micro_usd=call.usage.cost_micro_usd,
    )
    conn.execute(
        _INSERT_CALL,
        {
            "call_key": call.call_key,
            "task_id": task_id,
            "tenant_id": tenant_id,
            "node_id": call.node_id,
            "provider": call.provider,
            "model": call.model,
            "prompt_tokens": call.usage.prompt_tokens,
            "completion_tokens": call.usage.completion_tokens,
            "cached_tokens": call.cached_tokens,
            "cache_hit": call.cache_hit,
            "cost_micro_usd": call.usage.cost_micro_usd,
            "latency_ms": call.latency_ms,
            "created_at": _now(),
        },
    )
    conn.execute(_ADD_TASK_USAGE, {**_task_key(tenant_id, task_id), **_usage_params(call.usage)})
    return budget_alerts(settled, call.usage, threshold)


def budget_alerts(
    settled: Sequence[Settled], usage: Usage, threshold: float
) -> list[tuple[EventType, dict[str, Any]]]:
    """A ``budget.alert`` when this call's use (settled on these counters) took its
    tenant's day over the threshold of its token limit or of its money limit."""
    day = next((c for c in settled if c.counter.startswith("day:")), None)
    if day is None:
        return []
    crossed = [
        (kind, used, limit)
        for kind, used, spent, limit in (
            ("tokens", day.used_tokens, usage.total_tokens, day.limit_tokens),
            ("micro_usd", day.used_micro_usd, usage.cost_micro_usd, day.limit_micro_usd),
        )
        if limit is not None and spent and used - spent < threshold * limit <= used
    ]
    return [
        (
            EventType.BUDGET_ALERT,
            {
                "scope": "tenant_day",
                "day": day.counter.rsplit(":", 1)[1],
                "measure": kind,
                "used": used,
                "limit": limit,
                # Kept for clients of the first version of this event.
                "used_tokens": day.used_tokens,
                "limit_tokens": day.limit_tokens,
                "threshold": threshold,
            },
        )
        for kind, used, limit in crossed
    ]


def _call_event(call: LLMCallRecord) -> tuple[EventType, dict[str, Any]]:
    return EventType.LLM_CALL, {
        "node_id": call.node_id,
        "provider": call.provider,
        "model": call.model,
        "prompt_tokens": call.usage.prompt_tokens,
        "completion_tokens": call.usage.completion_tokens,
        "cost_micro_usd": call.usage.cost_micro_usd,
        "latency_ms": call.latency_ms,
        "cache_hit": call.cache_hit,
    }


def _finish(
    conn: Connection,
    tenant_id: str,
    task_id: str,
    status: TaskStatus,
    result: str | None,
    error: TaskError | None,
    call: LLMCallRecord | None,
    threshold: float,
) -> Finish:
    pending: list[tuple[EventType, dict[str, Any]]] = []
    call_stored = call is not None and not _call_known(conn, call.call_key)
    if call is not None and call_stored:
        alerts = _add_call(conn, tenant_id, task_id, call, threshold)
        pending += [_call_event(call), *alerts]
    row = _task_row(conn, tenant_id, task_id, lock=True)
    if TaskStatus(row.status).terminal:
        _append(conn, tenant_id, task_id, pending)
        return Finish(task=None, call_stored=call_stored)
    # Calls that never recorded (cancelled, crashed) reserve nothing any more.
    for held in ledger.held_keys(conn, tenant_id, task_id):
        ledger.release(conn, task_id=task_id, call_key=held)
    key = _task_key(tenant_id, task_id)
    now = _now()
    conn.execute(
        _END_TASK,
        {
            **key,
            "p_status": status.value,
            "p_result": result,
            "p_error_code": error.code if error else None,
            "p_error_message": error.message if error else None,
            "p_now": now,
        },
    )
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
        # Nodes still pending or running when the task ends early will never finish.
        conn.execute(_CANCEL_OPEN_NODES, {**key, "p_now": now})
    elif row.session_id is not None:
        # The answer joins the conversation: the session's next tasks see this turn.
        _add_message(conn, tenant_id, row.session_id, task_id, "assistant", result or "", now)
        conn.execute(update(sessions).where(sessions.c.id == row.session_id).values(updated_at=now))
    pending.append((TERMINAL_EVENT_FOR_STATUS[status], data))
    _append(conn, tenant_id, task_id, pending)
    return Finish(task=_task(_task_row(conn, tenant_id, task_id)), call_stored=call_stored)


def _set_strategy(
    conn: Connection, tenant_id: str, task_id: str, strategy: Strategy, data: dict[str, Any]
) -> None:
    conn.execute(
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.tenant_id == tenant_id)
        .values(strategy=strategy.value)
    )
    event = (EventType.STRATEGY_CHOSEN, {"strategy": strategy.value, **data})
    _append(conn, tenant_id, task_id, [event])


def _save_plan(conn: Connection, tenant_id: str, task_id: str, plan: Plan) -> None:
    conn.execute(
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.tenant_id == tenant_id)
        .values(plan=plan.model_dump(mode="json"), strategy=Strategy.DAG.value)
    )
    known = set(
        conn.execute(
            select(task_nodes.c.node_id).where(
                task_nodes.c.task_id == task_id, task_nodes.c.tenant_id == tenant_id
            )
        ).scalars()
    )
    new_nodes = [
        {
            "task_id": task_id,
            "tenant_id": tenant_id,
            "node_id": node.id,
            "position": position,
            "role": node.role,
            "tier": node.tier,
            "depends_on": list(node.depends_on),
            "status": NodeStatus.PENDING.value,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost_micro_usd": 0,
            "attempts": 0,
        }
        for position, node in enumerate(plan.nodes)
        if node.id not in known  # a retried write finds the nodes there already
    ]
    if new_nodes:
        conn.execute(insert(task_nodes), new_nodes)
    event = (EventType.PLAN_CREATED, {"plan": plan.model_dump(mode="json")})
    _append(conn, tenant_id, task_id, [event])


def _node_started(conn: Connection, tenant_id: str, task_id: str, node_id: str) -> NodeStart:
    key = _task_key(tenant_id, task_id)
    node = {**key, "p_node": node_id}
    attempt = conn.execute(_START_NODE, {**node, "p_now": _now()}).scalar_one_or_none()
    output: str | None = None
    if attempt is None:  # finished by an earlier attempt (or unknown)
        output = conn.execute(_NODE_OUTPUT, node).scalar_one_or_none()
        if output is None:
            raise NotFound(f"node {node_id} of task {task_id} not found")
    else:
        event = (EventType.NODE_STARTED, {"node_id": node_id, "attempt": attempt})
        _append(conn, tenant_id, task_id, [event])
    return NodeStart(output=output)


def _node_completed(
    conn: Connection,
    tenant_id: str,
    task_id: str,
    node_id: str,
    output: str,
    call: LLMCallRecord,
    threshold: float,
) -> bool:
    if _call_known(conn, call.call_key):
        return False
    alerts = _add_call(conn, tenant_id, task_id, call, threshold)
    usage = call.usage
    conn.execute(
        _COMPLETE_NODE,
        {
            **_task_key(tenant_id, task_id),
            "p_node": node_id,
            "p_output": output,
            **_usage_params(usage),
            "p_now": _now(),
        },
    )
    summary = output if len(output) <= 200 else output[:199] + "…"
    completed = {
        "node_id": node_id,
        "output_summary": summary,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cost_micro_usd": usage.cost_micro_usd,
    }
    _append(
        conn,
        tenant_id,
        task_id,
        [_call_event(call), *alerts, (EventType.NODE_COMPLETED, completed)],
    )
    return True


def _record_agent_step(conn: Connection, tenant_id: str, task_id: str, step: AgentStep) -> None:
    node = step.node_id or ""
    conn.execute(
        delete(agent_steps).where(
            agent_steps.c.task_id == task_id,
            agent_steps.c.tenant_id == tenant_id,
            agent_steps.c.node_id == node,
            agent_steps.c.step == step.step,
        )
    )
    calls = [c.model_dump(mode="json") for c in step.calls]
    conn.execute(
        insert(agent_steps).values(
            task_id=task_id,
            tenant_id=tenant_id,
            node_id=node,
            step=step.step,
            thought=step.thought,
            tool_calls=calls,
            answer=step.answer,
            beliefs=step.beliefs.model_dump(mode="json"),
            prompt_tokens=step.usage.prompt_tokens,
            completion_tokens=step.usage.completion_tokens,
            cost_micro_usd=step.usage.cost_micro_usd,
            tool_seconds=step.tool_seconds,
            fuel=step.fuel,
            created_at=_now(),
        )
    )
    data = {
        "node_id": step.node_id,
        "step": step.step,
        "thought": step.thought[:500],
        "calls": [{**c, "observation": c["observation"][:500]} for c in calls],
        "answered": step.answer is not None,
        "prompt_tokens": step.usage.prompt_tokens,
        "completion_tokens": step.usage.completion_tokens,
        "cost_micro_usd": step.usage.cost_micro_usd,
        "tool_seconds": round(step.tool_seconds, 6),
        "fuel": step.fuel,
        "beliefs": {
            "facts": len(step.beliefs.facts),
            "open_questions": len(step.beliefs.open_questions),
            "plan": list(step.beliefs.plan),
        },
    }
    _append(conn, tenant_id, task_id, [(EventType.REACT_STEP, data)])


def _agent_step(row: Row[Any]) -> AgentStep:
    return AgentStep(
        node_id=row.node_id or None,
        step=row.step,
        thought=row.thought,
        calls=tuple(ToolCallRun.model_validate(c) for c in row.tool_calls),
        answer=row.answer,
        beliefs=BeliefState.model_validate(row.beliefs),
        usage=Usage(
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            cost_micro_usd=row.cost_micro_usd,
        ),
        tool_seconds=row.tool_seconds,
        fuel=row.fuel,
        created_at=row.created_at,
    )


def _nodes_ended(
    conn: Connection,
    tenant_id: str,
    task_id: str,
    failed: dict[str, TaskError],
    skipped: dict[str, str],
) -> None:
    key = _task_key(tenant_id, task_id)
    now = _now()
    ended: list[tuple[EventType, dict[str, Any]]] = []
    for node_id, error in failed.items():
        conn.execute(
            _END_OPEN_NODE,
            {
                **key,
                "p_node": node_id,
                "p_status": NodeStatus.FAILED.value,
                "p_error_code": error.code,
                "p_error_message": error.message,
                "p_now": now,
            },
        )
        ended.append((EventType.NODE_FAILED, {"node_id": node_id, "error": error.model_dump()}))
    for node_id, reason in skipped.items():
        conn.execute(
            _END_OPEN_NODE,
            {
                **key,
                "p_node": node_id,
                "p_status": NodeStatus.SKIPPED.value,
                "p_error_code": None,
                "p_error_message": None,
                "p_now": now,
            },
        )
        ended.append((EventType.NODE_SKIPPED, {"node_id": node_id, "reason": reason}))
    _append(conn, tenant_id, task_id, ended)


def _append(
    conn: Connection,
    tenant_id: str,
    task_id: str,
    new_events: Sequence[tuple[EventType, dict[str, Any]]],
) -> list[TaskEvent]:
    """Number the events after the task's last one and store them, in order."""
    if not new_events:
        return []
    count = len(new_events)
    last = conn.execute(
        _NUMBER_EVENTS, {**_task_key(tenant_id, task_id), "p_count": count}
    ).scalar_one_or_none()
    if last is None:
        raise NotFound(f"task {task_id} not found", code="task_not_found")
    first = int(last) - count + 1
    now = _now()
    appended = [
        TaskEvent(task_id=task_id, seq=first + i, type=type_, data=data, created_at=now)
        for i, (type_, data) in enumerate(new_events)
    ]
    collected = conn.info.get(_APPENDED)
    if collected is not None:
        collected.extend(appended)
    conn.execute(
        _INSERT_EVENTS,
        [
            {
                "task_id": task_id,
                "tenant_id": tenant_id,
                "seq": e.seq,
                "type": e.type.value,
                "data": e.data,
                "created_at": now,
            }
            for e in appended
        ],
    )
    return appended


def _usage_summary(
    conn: Connection, tenant_id: str, start: datetime, end: datetime, sqlite: bool
) -> UsageSummary:
    usage = token_usage.c
    measures = (
        func.count().label("calls"),
        func.coalesce(func.sum(cast(usage.cache_hit, Integer)), 0).label("cache_hits"),
        func.coalesce(func.sum(usage.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(usage.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(usage.cost_micro_usd), 0).label("cost_micro_usd"),
    )
    scope = (usage.tenant_id == tenant_id, usage.created_at >= start, usage.created_at < end)
    # The UTC day as text: SQLite stores UTC timestamps as text already.
    day = (
        func.date(usage.created_at)
        if sqlite
        else func.to_char(func.timezone("UTC", usage.created_at), "YYYY-MM-DD")
    ).label("day")

    def lines(*keys: Any, joined: bool = False) -> list[UsageLine]:
        source = token_usage.join(tasks, tasks.c.id == usage.task_id) if joined else token_usage
        query = select(*keys, *measures).select_from(source).where(*scope)
        if keys:
            query = query.group_by(*keys).order_by(*keys)
        return [
            UsageLine(
                key=tuple(None if v is None else str(v) for v in row[: len(keys)]),
                calls=int(row.calls),
                cache_hits=int(row.cache_hits),
                prompt_tokens=int(row.prompt_tokens),
                completion_tokens=int(row.completion_tokens),
                cost_micro_usd=int(row.cost_micro_usd),
            )
            for row in conn.execute(query)
        ]

    return UsageSummary(
        total=lines()[0],
        by_day=lines(day),
        by_model=lines(usage.provider, usage.model),
        by_session=lines(tasks.c.session_id, joined=True),
    )


# --------------------------------------------------------------------------- rows → domain


def _error(row: Row[Any]) -> TaskError | None:
    if row.error_code is None:
        return None
    return TaskError(code=row.error_code, message=row.error_message or "")


def _usage(row: Row[Any]) -> Usage:
    return Usage(
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cost_micro_usd=row.cost_micro_usd,
    )


def _task(row: Row[Any]) -> Task:
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
        cost_budget_micro_usd=row.cost_budget_micro_usd,
        node_token_budget=row.node_token_budget,
        context=row.context,
        trace_id=row.trace_id,
    )


def _node_run(row: Row[Any]) -> NodeRun:
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


def _event(row: Row[Any]) -> TaskEvent:
    return TaskEvent(
        task_id=row.task_id,
        seq=row.seq,
        type=EventType(row.type),
        data=row.data,
        created_at=row.created_at,
    )


def _call_record(row: Row[Any]) -> LLMCallRecord:
    return LLMCallRecord(
        call_key=row.call_key,
        provider=row.provider,
        model=row.model,
        usage=Usage(
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            cost_micro_usd=row.cost_micro_usd,
        ),
        cached_tokens=row.cached_tokens,
        latency_ms=row.latency_ms,
        node_id=row.node_id,
        cache_hit=row.cache_hit,
    )
