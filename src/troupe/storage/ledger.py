"""The budget ledger: reserve before a model call, settle to what it used, or release.

Every budget is a counter row in ``budget_counters``: tokens and micro-dollars used and
reserved, and the limits it was last reserved under. A call draws on several budgets
at once (its task, its plan node, its session, its tenant's UTC day); a reservation
takes the same amount from each of them, all or none, so that used + reserved never
exceeds any limit. The reservation row (``budget_reservations``, one per call key)
names its counters; deleting it is what makes a settle or a release happen exactly
once, and a second reserve under the same key returns the first grant.

These are plain functions of a ``Connection``: the task store runs them inside its own
transactions, so a call's usage row and the settling of its reservation commit
together. Each database gets the implementation that is fast on it, and both pass one
contract suite (``tests/integration/storage/test_budget_ledger.py``):

- SQLite: a handful of statements straight on the stdlib driver (the store's writers
  already hold the database's write lock, ``BEGIN IMMEDIATE``); SQLAlchemy's per-
  statement overhead would cost more than SQLite itself.
- PostgreSQL: one call of a plpgsql function per reserve or settle (``troupe_reserve``,
  ``troupe_settle``, migration 0008): one round trip, row locks held for microseconds
  and taken in counter id order, so calls over overlapping budgets cannot deadlock.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, text

from troupe.errors import BudgetExceeded, NotFound

# What each kind of counter is called in a refusal.
SCOPE_NAMES = {
    "task": "the task's budget",
    "node": "the agent's (plan node's) budget",
    "session": "the session's budget",
    "day": "the tenant's daily budget",
}


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget a call draws on: its counter and its limits (None: no limit)."""

    counter: str
    tokens: int | None = None
    micro_usd: int | None = None

    @property
    def scope(self) -> str:
        return self.counter.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class Ask:
    """What one call wants: its prompt (an estimate) and up to ``answer_tokens`` of
    answer, at least ``min_answer_tokens``; priced at the dearest model that may serve
    it (micro-dollars per million tokens), so the money reserved is never too little."""

    prompt_tokens: int
    answer_tokens: int
    min_answer_tokens: int = 1
    input_price: int = 0
    output_price: int = 0

    def micro_usd(self, answer_tokens: int) -> int:
        numerator = self.prompt_tokens * self.input_price + answer_tokens * self.output_price
        return -(-numerator // 1_000_000)

    def answer_within(self, tokens: int | None, micro_usd: int | None) -> int:
        """The longest answer that fits in ``tokens`` and ``micro_usd`` of room."""
        answer = self.answer_tokens
        if tokens is not None:
            answer = min(answer, tokens - self.prompt_tokens)
        if micro_usd is not None:
            if self.output_price:
                spare = micro_usd * 1_000_000 - self.prompt_tokens * self.input_price
                answer = min(answer, spare // self.output_price)
            elif self.micro_usd(0) > micro_usd:
                answer = -1
        return answer


@dataclass(frozen=True, slots=True)
class Grant:
    answer_tokens: int
    tokens: int
    micro_usd: int


@dataclass(frozen=True, slots=True)
class Settled:
    """A counter after a settle: what it has used, and its limits."""

    counter: str
    used_tokens: int
    used_micro_usd: int
    limit_tokens: int | None
    limit_micro_usd: int | None


@dataclass(frozen=True, slots=True)
class Counter:
    """A budget counter as stored."""

    id: str
    limit_tokens: int | None
    limit_micro_usd: int | None
    used_tokens: int
    reserved_tokens: int
    used_micro_usd: int
    reserved_micro_usd: int


def reserve(
    conn: Connection | sqlite3.Connection,
    *,
    tenant_id: str,
    task_id: str,
    call_key: str,
    budgets: Sequence[Budget],
    ask: Ask,
    stale_prefix: str | None = None,
) -> Grant:
    """Reserve ``ask`` against every budget, all or none; BudgetExceeded naming the
    budget that is short when not even ``min_answer_tokens`` fit. A key reserved before
    gets its first grant back. Reservations of the task held under ``stale_prefix``
    (dead attempts of the same activity) are released first."""
    by_id = {b.counter: b for b in budgets}
    ids = sorted(by_id)
    db = _sqlite_of(conn)
    if db is None:
        assert isinstance(conn, Connection)
        return _pg_reserve(
            conn, tenant_id, task_id, call_key, [by_id[i] for i in ids], ask, stale_prefix
        )
    first = _sqlite_held(db, call_key)
    if first is not None:
        return first
    if not db.execute(
        "SELECT 1 FROM tasks WHERE id = ? AND tenant_id = ?", (task_id, tenant_id)
    ).fetchone():
        raise _no_task(task_id)
    if stale_prefix:
        held_keys = db.execute(
            "SELECT call_key FROM budget_reservations WHERE task_id = ? AND tenant_id = ?",
            (task_id, tenant_id),
        ).fetchall()
        for (stale,) in held_keys:
            if stale.startswith(stale_prefix):
                _sqlite_settle(db, task_id, stale, 0, 0)
    # Counters are created on first use and take the limits of this call; the upsert
    # hands back each one as it now stands, so no second read is needed.
    rows = db.execute(
        "INSERT INTO budget_counters (id, tenant_id, limit_tokens, limit_micro_usd, "  # noqa: S608
        "used_tokens, reserved_tokens, used_micro_usd, reserved_micro_usd) VALUES "
        + ", ".join(["(?, ?, ?, ?, 0, 0, 0, 0)"] * len(ids))
        + " ON CONFLICT (id) DO UPDATE SET limit_tokens = excluded.limit_tokens, "
        "limit_micro_usd = excluded.limit_micro_usd RETURNING id, limit_tokens, "
        "limit_micro_usd, used_tokens, reserved_tokens, used_micro_usd, reserved_micro_usd",
        [value for i in ids for value in (i, tenant_id, by_id[i].tokens, by_id[i].micro_usd)],
    ).fetchall()
    answer = ask.answer_tokens
    short: tuple[Budget, int, int] | None = None
    for counter in sorted((Counter(*row) for row in rows), key=lambda c: c.id):
        budget = by_id[counter.id]
        room_tokens = (
            None
            if budget.tokens is None
            else budget.tokens - counter.used_tokens - counter.reserved_tokens
        )
        room_usd = (
            None
            if budget.micro_usd is None
            else budget.micro_usd - counter.used_micro_usd - counter.reserved_micro_usd
        )
        fits = ask.answer_within(room_tokens, room_usd)
        if fits < answer:
            answer = fits
            short = (budget, room_tokens or 0, room_usd or 0)
    if answer < ask.min_answer_tokens:
        assert short is not None
        raise refusal(short, ask)
    grant = Grant(
        answer_tokens=answer, tokens=ask.prompt_tokens + answer, micro_usd=ask.micro_usd(answer)
    )
    db.execute(
        "UPDATE budget_counters SET reserved_tokens = reserved_tokens + ?, "  # noqa: S608
        f"reserved_micro_usd = reserved_micro_usd + ? WHERE id IN ({_marks(ids)})",
        (grant.tokens, grant.micro_usd, *ids),
    )
    db.execute(
        "INSERT INTO budget_reservations (call_key, task_id, tenant_id, tokens, micro_usd, "
        "answer_tokens, counters, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            call_key,
            task_id,
            tenant_id,
            grant.tokens,
            grant.micro_usd,
            grant.answer_tokens,
            json.dumps(ids),
            _sqlite_now(),
        ),
    )
    return grant


def settle(
    conn: Connection | sqlite3.Connection,
    *,
    task_id: str,
    call_key: str,
    tokens: int,
    micro_usd: int,
) -> list[Settled]:
    """Turn the call's reservation into ``tokens`` and ``micro_usd`` used, once: the
    counters after, or [] when there was nothing (left) to settle."""
    db = _sqlite_of(conn)
    if db is None:
        assert isinstance(conn, Connection)
        params = {"key": call_key, "task": task_id, "tokens": tokens, "usd": micro_usd}
        return [Settled(*row) for row in conn.execute(_PG_SETTLE, params)]
    return _sqlite_settle(db, task_id, call_key, tokens, micro_usd)


def release(conn: Connection | sqlite3.Connection, *, task_id: str, call_key: str) -> None:
    """Give a reservation back unused (once; nothing after a settle or a release)."""
    settle(conn, task_id=task_id, call_key=call_key, tokens=0, micro_usd=0)


def held_keys(conn: Connection, tenant_id: str, task_id: str) -> list[str]:
    """The keys of the task's reservations still held."""
    return list(
        conn.execute(
            text(
                "SELECT call_key FROM budget_reservations "
                "WHERE task_id = :task AND tenant_id = :tenant"
            ),
            {"task": task_id, "tenant": tenant_id},
        ).scalars()
    )


def counters(conn: Connection, ids: Sequence[str]) -> dict[str, Counter]:
    """The counters of ``ids`` that exist, by id."""
    if conn.dialect.name == "postgresql":
        rows = conn.execute(_PG_COUNTERS, {"ids": sorted(ids)})
        return {row.id: Counter(*row) for row in rows}
    return {c.id: c for c in _sqlite_counters(_sqlite(conn), sorted(ids))}


# --------------------------------------------------------------------------- SQLite


def _sqlite(conn: Connection) -> sqlite3.Connection:
    db = conn.connection.driver_connection
    assert isinstance(db, sqlite3.Connection)
    return db


def _sqlite_of(conn: Connection | sqlite3.Connection) -> sqlite3.Connection | None:
    """The SQLite driver connection to work on (``Transactions.write_lean`` gives
    one directly); None on PostgreSQL."""
    if isinstance(conn, sqlite3.Connection):
        return conn
    return None if conn.dialect.name == "postgresql" else _sqlite(conn)


def _marks(ids: Sequence[str]) -> str:
    """One ``?`` per id: the only text formatted into these statements (every value is
    bound), hence their ``noqa: S608``."""
    return ", ".join("?" * len(ids))


def _sqlite_now() -> str:
    # The text form SQLAlchemy's SQLite DateTime writes and reads (UTC).
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _sqlite_counters(db: sqlite3.Connection, ids: Sequence[str]) -> list[Counter]:
    rows = db.execute(
        "SELECT id, limit_tokens, limit_micro_usd, used_tokens, reserved_tokens, "  # noqa: S608
        "used_micro_usd, reserved_micro_usd FROM budget_counters "
        f"WHERE id IN ({_marks(ids)}) "
        "ORDER BY id",
        tuple(ids),
    ).fetchall()
    return [Counter(*row) for row in rows]


def _sqlite_held(db: sqlite3.Connection, call_key: str) -> Grant | None:
    row = db.execute(
        "SELECT answer_tokens, tokens, micro_usd FROM budget_reservations WHERE call_key = ?",
        (call_key,),
    ).fetchone()
    return None if row is None else Grant(*row)


def _sqlite_settle(
    db: sqlite3.Connection, task_id: str, call_key: str, tokens: int, micro_usd: int
) -> list[Settled]:
    row = db.execute(
        "DELETE FROM budget_reservations WHERE call_key = ? AND task_id = ? "
        "RETURNING tokens, micro_usd, counters",
        (call_key, task_id),
    ).fetchone()
    if row is None:
        return []
    held_tokens, held_usd, ids = row[0], row[1], json.loads(row[2])
    rows = db.execute(
        "UPDATE budget_counters SET reserved_tokens = reserved_tokens - ?, "  # noqa: S608
        "reserved_micro_usd = reserved_micro_usd - ?, used_tokens = used_tokens + ?, "
        f"used_micro_usd = used_micro_usd + ? WHERE id IN ({_marks(ids)}) "
        "RETURNING id, used_tokens, used_micro_usd, limit_tokens, limit_micro_usd",
        (held_tokens, held_usd, tokens, micro_usd, *ids),
    ).fetchall()
    return [Settled(*r) for r in rows]


# --------------------------------------------------------------------------- PostgreSQL

_PG_RESERVE = text(
    "SELECT answer, tokens, micro_usd, short_id, room_tokens, room_micro_usd "
    "FROM troupe_reserve(:key, :task, :tenant, CAST(:ids AS text[]), "
    "CAST(:limit_tokens AS bigint[]), CAST(:limit_usd AS bigint[]), :prompt, :answer, "
    ":min_answer, :input_price, :output_price, :stale)"
)
_PG_SETTLE = text(
    "SELECT id, used_tokens, used_micro_usd, limit_tokens, limit_micro_usd "
    "FROM troupe_settle(:key, :task, :tokens, :usd)"
)
_PG_COUNTERS = text(
    "SELECT id, limit_tokens, limit_micro_usd, used_tokens, reserved_tokens, "
    "used_micro_usd, reserved_micro_usd FROM budget_counters "
    "WHERE id = ANY(CAST(:ids AS text[])) ORDER BY id"
)


def _pg_reserve(
    conn: Connection,
    tenant_id: str,
    task_id: str,
    call_key: str,
    budgets: Sequence[Budget],
    ask: Ask,
    stale_prefix: str | None,
) -> Grant:
    row = conn.execute(
        _PG_RESERVE,
        {
            "key": call_key,
            "task": task_id,
            "tenant": tenant_id,
            "ids": [b.counter for b in budgets],
            "limit_tokens": [b.tokens for b in budgets],
            "limit_usd": [b.micro_usd for b in budgets],
            "prompt": ask.prompt_tokens,
            "answer": ask.answer_tokens,
            "min_answer": ask.min_answer_tokens,
            "input_price": ask.input_price,
            "output_price": ask.output_price,
            "stale": stale_prefix,
        },
    ).one()
    if row.short_id == "!task":
        raise _no_task(task_id)
    if row.short_id is not None:
        short = next(b for b in budgets if b.counter == row.short_id)
        raise refusal((short, row.room_tokens or 0, row.room_micro_usd or 0), ask)
    return Grant(answer_tokens=row.answer, tokens=row.tokens, micro_usd=row.micro_usd)


def _no_task(task_id: str) -> NotFound:
    return NotFound(f"task {task_id} not found", code="task_not_found")


def refusal(short: tuple[Budget, int, int], ask: Ask) -> BudgetExceeded:
    budget, room_tokens, room_usd = short
    name = SCOPE_NAMES.get(budget.scope, budget.scope)
    needs = ask.prompt_tokens + ask.min_answer_tokens
    left = []
    if budget.tokens is not None:
        left.append(f"{max(room_tokens, 0)} of {budget.tokens} tokens")
    if budget.micro_usd is not None:
        left.append(f"{max(room_usd, 0)} of {budget.micro_usd} micro-dollars")
    return BudgetExceeded(
        f"this call needs at least {needs} tokens (its prompt and {ask.min_answer_tokens} "
        f"token of answer, about {ask.micro_usd(ask.min_answer_tokens)} micro-dollars); "
        f"{name} has {' and '.join(left)} left",
        code="budget_exceeded",
    )
