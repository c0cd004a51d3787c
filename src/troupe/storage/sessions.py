"""Sessions: conversations whose tasks see the turns before them.

PostgreSQL (or SQLite) holds the record: the ``sessions`` row with its summary and
``messages`` (each task's question, and its answer once it completes, written in the
task's own transactions by the task store). The hot copy of a session's state, the
summary and its latest turns, lives in a :class:`SessionCache` (Redis in production,
in-process by default) for ``sessions.cache_ttl_s``; every change drops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import aliased

from troupe.domain import SessionState, SessionTurn, TaskStatus
from troupe.errors import Conflict, InvalidInput, NotFound
from troupe.storage.database import Transactions
from troupe.storage.kv.base import SessionCache
from troupe.storage.tables import messages, sessions, tasks

_UNFINISHED = [s.value for s in TaskStatus if not s.terminal]


@dataclass(frozen=True)
class SessionPage:
    items: list[SessionState]  # with their turns left out
    next_cursor: str | None


class SqlSessionStore:
    """Read, summarize and delete a tenant's sessions; the cache in front of reads."""

    def __init__(self, engine: AsyncEngine, cache: SessionCache, *, max_turns: int) -> None:
        self._tx = Transactions(engine)
        self._cache = cache
        # Turns kept after the summary in a state, at most; beyond them the record holds
        # them and the summary should fold them in.
        self._window = max_turns * 4

    async def state(self, tenant_id: str, session_id: str) -> SessionState:
        """The summary and the turns after it; NotFound for another tenant's or none."""
        key = _key(tenant_id, session_id)
        cached, generation = await self._cache.get(key)
        if cached is not None:
            return SessionState.model_validate_json(cached)
        state = await self._tx.read(_state, tenant_id, session_id, self._window)
        await self._cache.put(key, state.model_dump_json().encode(), generation=generation)
        return state

    async def question_id(self, tenant_id: str, task_id: str) -> int | None:
        """The id of the task's question in its session (None: not in a session)."""
        query = select(messages.c.id).where(
            messages.c.tenant_id == tenant_id,
            messages.c.task_id == task_id,
            messages.c.role == "user",
        )
        return await self._tx.read(lambda conn: conn.execute(query).scalar_one_or_none())

    async def save_summary(
        self, tenant_id: str, session_id: str, summary: str, *, through: int
    ) -> bool:
        """Store a summary of the turns up to message ``through``, unless one reaching
        as far or further is stored already (False then)."""
        statement = (
            update(sessions)
            .where(
                sessions.c.id == session_id,
                sessions.c.tenant_id == tenant_id,
                sessions.c.summary_through < through,
            )
            .values(summary=summary, summary_through=through)
        )
        saved = await self._tx.write(lambda conn: conn.execute(statement).rowcount > 0)
        await self.changed(tenant_id, session_id)
        return saved

    async def changed(self, tenant_id: str, session_id: str) -> None:
        """The record changed (a turn ended, a summary was written): drop the hot copy."""
        await self._cache.drop(_key(tenant_id, session_id))

    async def list_sessions(
        self,
        tenant_id: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
        user_id: str | None = None,
    ) -> SessionPage:
        """The tenant's sessions, most recently active first (with ``user_id``: only
        that user's and the shared ones); ``cursor`` from a previous page."""
        return await self._tx.read(_list, tenant_id, limit, _parse_cursor(cursor), user_id)

    async def delete(self, tenant_id: str, session_id: str) -> list[str]:
        """Delete the session and its messages; its tasks stay (the usage record),
        detached, without the context they were given. Conflict while one runs.
        Returns the ids of its tasks."""
        task_ids = await self._tx.write(_delete, tenant_id, session_id)
        await self.changed(tenant_id, session_id)
        return task_ids

    async def aclose(self) -> None:
        await self._tx.aclose()


def _key(tenant_id: str, session_id: str) -> str:
    return f"{tenant_id}:{session_id}"


def _session_row(conn: Connection, tenant_id: str, session_id: str) -> Any:
    row = conn.execute(
        select(sessions).where(sessions.c.id == session_id, sessions.c.tenant_id == tenant_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"session {session_id} not found", code="session_not_found")
    return row


def _task_count(conn: Connection, tenant_id: str, session_id: str) -> int:
    return int(
        conn.execute(
            select(func.count()).where(
                tasks.c.tenant_id == tenant_id, tasks.c.session_id == session_id
            )
        ).scalar_one()
    )


def _state(conn: Connection, tenant_id: str, session_id: str, window: int) -> SessionState:
    row = _session_row(conn, tenant_id, session_id)
    question = aliased(messages)
    answers = (
        select(
            messages.c.id,
            messages.c.task_id,
            messages.c.content,
            messages.c.created_at,
            question.c.content.label("question"),
        )
        .join(
            question,
            and_(question.c.task_id == messages.c.task_id, question.c.role == "user"),
        )
        .where(
            messages.c.tenant_id == tenant_id,
            messages.c.session_id == session_id,
            messages.c.role == "assistant",
            messages.c.id > row.summary_through,
        )
        .order_by(messages.c.id.desc())
        .limit(window)
    )
    turns = [
        SessionTurn(
            task_id=r.task_id,
            question=r.question,
            answer=r.content,
            answer_id=r.id,
            answered_at=r.created_at,
        )
        for r in conn.execute(answers)
    ]
    return _session_state(row, tuple(reversed(turns)), _task_count(conn, tenant_id, session_id))


def _session_state(row: Any, turns: tuple[SessionTurn, ...], tasks: int) -> SessionState:
    return SessionState(
        id=row.id,
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        summary=row.summary,
        summary_through=row.summary_through,
        turns=turns,
        tasks=tasks,
    )


def _list(
    conn: Connection,
    tenant_id: str,
    limit: int,
    after: tuple[datetime, str] | None,
    user_id: str | None,
) -> SessionPage:
    counts = (
        select(tasks.c.session_id, func.count().label("tasks"))
        .where(tasks.c.tenant_id == tenant_id, tasks.c.session_id.is_not(None))
        .group_by(tasks.c.session_id)
        .subquery()
    )
    query = (
        select(sessions, func.coalesce(counts.c.tasks, 0).label("tasks"))
        .outerjoin(counts, counts.c.session_id == sessions.c.id)
        .where(sessions.c.tenant_id == tenant_id)
    )
    if user_id is not None:
        query = query.where((sessions.c.user_id == user_id) | sessions.c.user_id.is_(None))
    if after is not None:
        at, session_id = after
        query = query.where(
            (sessions.c.updated_at < at)
            | ((sessions.c.updated_at == at) & (sessions.c.id < session_id))
        )
    query = query.order_by(sessions.c.updated_at.desc(), sessions.c.id.desc()).limit(limit + 1)
    rows = list(conn.execute(query))
    more = len(rows) > limit
    rows = rows[:limit]
    items = [_session_state(r, (), r.tasks) for r in rows]
    cursor = f"{rows[-1].updated_at.isoformat()}|{rows[-1].id}" if more else None
    return SessionPage(items=items, next_cursor=cursor)


def _parse_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    at, sep, session_id = cursor.partition("|")
    try:
        if not sep:
            raise ValueError(cursor)
        return datetime.fromisoformat(at), session_id
    except ValueError:
        raise InvalidInput("cursor is not one this API returned", code="invalid_cursor") from None


def _delete(conn: Connection, tenant_id: str, session_id: str) -> list[str]:
    _session_row(conn, tenant_id, session_id)
    scope = (tasks.c.tenant_id == tenant_id, tasks.c.session_id == session_id)
    running = conn.execute(
        select(func.count()).where(*scope, tasks.c.status.in_(_UNFINISHED))
    ).scalar_one()
    if running:
        raise Conflict(
            f"session {session_id} has {running} unfinished tasks: cancel them or wait",
            code="session_busy",
        )
    task_ids = list(conn.execute(select(tasks.c.id).where(*scope)).scalars())
    conn.execute(update(tasks).where(*scope).values(session_id=None, context=None))
    conn.execute(
        delete(messages).where(
            messages.c.tenant_id == tenant_id, messages.c.session_id == session_id
        )
    )
    conn.execute(
        delete(sessions).where(sessions.c.id == session_id, sessions.c.tenant_id == tenant_id)
    )
    return task_ids
