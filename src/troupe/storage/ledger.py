"""The budget ledger: reserve before a model call, settle to what it used, or release.

Every budget is a counter row in ``budget_counters``: tokens and micro-dollars used and
reserved, and the limits it was last reserved under. A call draws on several budgets
at once (its task, its plan node, its session, its tenant's UTC day); a reservation
takes the same amount from each of them, all or none, so that used + reserved never
exceeds any limit. The reservation row (``budget_reservations``, one per call key)
names its counters; deleting it is what makes a settle or a release happen exactly
once.

These are plain functions of a ``Connection``: the task store runs them inside its own
transactions, so a call's usage row and the settling of its reservation commit
together. Counters are locked in id order (PostgreSQL: the upsert takes the row locks),
so two calls over overlapping budgets cannot deadlock.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from troupe.errors import BudgetExceeded
from troupe.storage.tables import budget_counters, budget_reservations

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


def _now() -> datetime:
    return datetime.now(UTC)


_COUNTERS = (
    select(budget_counters)
    .where(budget_counters.c.id.in_(bindparam("p_ids", expanding=True)))
    .order_by(budget_counters.c.id)
)
_HOLD = (
    update(budget_counters)
    .where(budget_counters.c.id.in_(bindparam("p_ids", expanding=True)))
    .values(
        reserved_tokens=budget_counters.c.reserved_tokens + bindparam("p_tokens"),
        reserved_micro_usd=budget_counters.c.reserved_micro_usd + bindparam("p_usd"),
    )
)
_SETTLE = (
    update(budget_counters)
    .where(budget_counters.c.id.in_(bindparam("p_ids", expanding=True)))
    .values(
        reserved_tokens=budget_counters.c.reserved_tokens - bindparam("p_tokens"),
        reserved_micro_usd=budget_counters.c.reserved_micro_usd - bindparam("p_usd"),
        used_tokens=budget_counters.c.used_tokens + bindparam("p_used_tokens"),
        used_micro_usd=budget_counters.c.used_micro_usd + bindparam("p_used_usd"),
    )
    .returning(
        budget_counters.c.id,
        budget_counters.c.used_tokens,
        budget_counters.c.used_micro_usd,
        budget_counters.c.limit_tokens,
        budget_counters.c.limit_micro_usd,
    )
)
_HELD = select(
    budget_reservations.c.tokens,
    budget_reservations.c.micro_usd,
    budget_reservations.c.answer_tokens,
).where(budget_reservations.c.call_key == bindparam("p_key"))
_HELD_KEYS = select(budget_reservations.c.call_key).where(
    budget_reservations.c.task_id == bindparam("p_task"),
    budget_reservations.c.tenant_id == bindparam("p_tenant"),
)
_DROP = (
    delete(budget_reservations)
    .where(
        budget_reservations.c.call_key == bindparam("p_key"),
        budget_reservations.c.task_id == bindparam("p_task"),
    )
    .returning(
        budget_reservations.c.tokens,
        budget_reservations.c.micro_usd,
        budget_reservations.c.counters,
    )
)


def reserve(
    conn: Connection,
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
    fails on the reservation's primary key (IntegrityError), undoing everything: the
    caller reads the first grant back with :func:`held`."""
    if stale_prefix:
        for stale in conn.execute(_HELD_KEYS, {"p_task": task_id, "p_tenant": tenant_id}).scalars():
            if stale.startswith(stale_prefix):
                release(conn, task_id=task_id, call_key=stale)
    by_id = {b.counter: b for b in budgets}
    ids = sorted(by_id)
    _upsert_limits(conn, tenant_id, [by_id[i] for i in ids])
    answer = ask.answer_tokens
    short: tuple[Budget, int, int] | None = None
    for row in conn.execute(_COUNTERS, {"p_ids": ids}):
        budget = by_id[row.id]
        room_tokens = (
            None if budget.tokens is None else budget.tokens - row.used_tokens - row.reserved_tokens
        )
        room_usd = (
            None
            if budget.micro_usd is None
            else budget.micro_usd - row.used_micro_usd - row.reserved_micro_usd
        )
        fits = ask.answer_within(room_tokens, room_usd)
        if fits < answer:
            answer = fits
            short = (budget, room_tokens or 0, room_usd or 0)
    if answer < ask.min_answer_tokens:
        assert short is not None
        raise _refusal(short, ask)
    grant = Grant(
        answer_tokens=answer,
        tokens=ask.prompt_tokens + answer,
        micro_usd=ask.micro_usd(answer),
    )
    conn.execute(_HOLD, {"p_ids": ids, "p_tokens": grant.tokens, "p_usd": grant.micro_usd})
    conn.execute(
        insert(budget_reservations),
        {
            "call_key": call_key,
            "task_id": task_id,
            "tenant_id": tenant_id,
            "tokens": grant.tokens,
            "micro_usd": grant.micro_usd,
            "answer_tokens": grant.answer_tokens,
            "counters": json.dumps(ids),
            "created_at": _now(),
        },
    )
    return grant


def held(conn: Connection, call_key: str) -> Grant | None:
    """The grant reserved under ``call_key``, while it is held."""
    row = conn.execute(_HELD, {"p_key": call_key}).one_or_none()
    if row is None:
        return None
    return Grant(answer_tokens=row.answer_tokens, tokens=row.tokens, micro_usd=row.micro_usd)


def settle(
    conn: Connection, *, task_id: str, call_key: str, tokens: int, micro_usd: int
) -> list[Settled]:
    """Turn the call's reservation into ``tokens`` and ``micro_usd`` used, once: the
    counters after, or [] when there was nothing (left) to settle."""
    row = conn.execute(_DROP, {"p_key": call_key, "p_task": task_id}).one_or_none()
    if row is None:
        return []
    params = {
        "p_ids": json.loads(row.counters),
        "p_tokens": row.tokens,
        "p_usd": row.micro_usd,
        "p_used_tokens": tokens,
        "p_used_usd": micro_usd,
    }
    return [
        Settled(r.id, r.used_tokens, r.used_micro_usd, r.limit_tokens, r.limit_micro_usd)
        for r in conn.execute(_SETTLE, params)
    ]


def release(conn: Connection, *, task_id: str, call_key: str) -> None:
    """Give a reservation back unused (once; nothing after a settle or a release)."""
    settle(conn, task_id=task_id, call_key=call_key, tokens=0, micro_usd=0)


def counters(conn: Connection, ids: Sequence[str]) -> dict[str, Any]:
    """The counters of ``ids`` that exist, by id."""
    return {row.id: row for row in conn.execute(_COUNTERS, {"p_ids": sorted(ids)})}


def _upsert_limits(conn: Connection, tenant_id: str, budgets: Sequence[Budget]) -> None:
    """Make missing counters, and record the limits each is reserved under (what the
    budgets view and the alerts compare with). On PostgreSQL this locks the rows."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(budget_counters)
    statement = statement.on_conflict_do_update(
        index_elements=[budget_counters.c.id],
        set_={
            "limit_tokens": statement.excluded.limit_tokens,
            "limit_micro_usd": statement.excluded.limit_micro_usd,
        },
    )
    conn.execute(
        statement,
        [
            {
                "id": b.counter,
                "tenant_id": tenant_id,
                "limit_tokens": b.tokens,
                "limit_micro_usd": b.micro_usd,
                "used_tokens": 0,
                "reserved_tokens": 0,
                "used_micro_usd": 0,
                "reserved_micro_usd": 0,
            }
            for b in budgets
        ],
    )


def _refusal(short: tuple[Budget, int, int], ask: Ask) -> BudgetExceeded:
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
