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
- PostgreSQL: operations in batches (``run_batch``): the store sends the reserves and
  settles its agents ask for while a batch is on its way as the next one
  (``storage/batching.py``). A batch is five statements and one commit, whatever its
  size: hot counters are locked (in id order, so batches cannot deadlock), worked out
  here and written back once. A counter's row lock is held until the commit is on
  disk, so on hot budgets one commit per operation, not the database's work, was the
  ceiling (~500 pairs/s); a batch shares the commit among everyone waiting.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
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


@dataclass(frozen=True, slots=True)
class Reservation:
    """A reserve, as an operation of a batch (``reserve``'s arguments)."""

    tenant_id: str
    task_id: str
    call_key: str
    budgets: Sequence[Budget]
    ask: Ask
    stale_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """A settle (a release: 0 and 0), as an operation of a batch."""

    task_id: str
    call_key: str
    tokens: int
    micro_usd: int


LedgerOp = Reservation | Settlement
LedgerAnswer = Grant | list[Settled]


def apply(conn: Connection | sqlite3.Connection, op: LedgerOp) -> LedgerAnswer:
    """``op`` alone: ``reserve`` or ``settle`` with its arguments."""
    if isinstance(op, Settlement):
        return settle(
            conn, task_id=op.task_id, call_key=op.call_key, tokens=op.tokens, micro_usd=op.micro_usd
        )
    return reserve(
        conn,
        tenant_id=op.tenant_id,
        task_id=op.task_id,
        call_key=op.call_key,
        budgets=op.budgets,
        ask=op.ask,
        stale_prefix=op.stale_prefix,
    )


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
        op = Reservation(tenant_id, task_id, call_key, budgets, ask, stale_prefix)
        granted = run_batch(conn, [op])[0]
        if isinstance(granted, Exception):
            raise granted
        assert isinstance(granted, Grant)
        return granted
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
    counters = {row[0]: Counter(*row) for row in rows}
    answer, short = _longest_answer(ask, [(by_id[i], counters[i]) for i in ids])
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


def _longest_answer(
    ask: Ask, drawn: Sequence[tuple[Budget, Counter]]
) -> tuple[int, tuple[Budget, int, int] | None]:
    """The longest answer every budget has room for, under the limits of this call;
    and the budget that shortened it most (with its room in tokens and money)."""
    answer = ask.answer_tokens
    short: tuple[Budget, int, int] | None = None
    for budget, counter in drawn:
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
    return answer, short


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
        settled = run_batch(conn, [Settlement(task_id, call_key, tokens, micro_usd)])[0]
        assert isinstance(settled, list)
        return settled
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

# A batch takes a handful of statements, whatever its size: the counters' row locks
# are held from _PG_LOCK to the commit, so nothing is computed on the server meanwhile.
_PG_HELD = text(
    "SELECT call_key, task_id, tenant_id, tokens, micro_usd, answer_tokens, counters "
    "FROM budget_reservations WHERE call_key = ANY(CAST(:keys AS text[])) "
    "OR task_id = ANY(CAST(:tasks AS text[])) ORDER BY call_key FOR UPDATE"
)
_PG_TASKS = text("SELECT id, tenant_id FROM tasks WHERE id = ANY(CAST(:ids AS text[]))")
_PG_NEW_COUNTERS = text(
    "INSERT INTO budget_counters (id, tenant_id, limit_tokens, limit_micro_usd, used_tokens, "
    "reserved_tokens, used_micro_usd, reserved_micro_usd) "
    "SELECT u.id, u.tenant, u.lt, u.lu, 0, 0, 0, 0 FROM unnest(CAST(:ids AS text[]), "
    "CAST(:tenants AS text[]), CAST(:lt AS bigint[]), CAST(:lu AS bigint[])) "
    "AS u(id, tenant, lt, lu) ORDER BY u.id ON CONFLICT ON CONSTRAINT pk_budget_counters DO NOTHING"
)
_PG_LOCK = text(
    "SELECT id, limit_tokens, limit_micro_usd, used_tokens, reserved_tokens, "
    "used_micro_usd, reserved_micro_usd FROM budget_counters "
    "WHERE id = ANY(CAST(:ids AS text[])) ORDER BY id FOR UPDATE"
)
_PG_WRITE = text(
    "WITH counted AS (UPDATE budget_counters b SET limit_tokens = u.lt, "
    "limit_micro_usd = u.lu, used_tokens = u.ut, reserved_tokens = u.rt, "
    "used_micro_usd = u.uu, reserved_micro_usd = u.ru "
    "FROM unnest(CAST(:ids AS text[]), CAST(:lt AS bigint[]), CAST(:lu AS bigint[]), "
    "CAST(:ut AS bigint[]), CAST(:rt AS bigint[]), CAST(:uu AS bigint[]), "
    "CAST(:ru AS bigint[])) AS u(id, lt, lu, ut, rt, uu, ru) WHERE b.id = u.id), "
    "gone AS (DELETE FROM budget_reservations WHERE call_key = ANY(CAST(:gone AS text[]))) "
    "INSERT INTO budget_reservations (call_key, task_id, tenant_id, tokens, micro_usd, "
    "answer_tokens, counters, created_at) "
    "SELECT r.key, r.task, r.tenant, r.tokens, r.usd, r.answer, r.counters, now() "
    "FROM unnest(CAST(:keys AS text[]), CAST(:tasks AS text[]), CAST(:tenants AS text[]), "
    "CAST(:tokens AS bigint[]), CAST(:usd AS bigint[]), CAST(:answers AS bigint[]), "
    "CAST(:counters AS text[])) AS r(key, task, tenant, tokens, usd, answer, counters)"
)
_PG_COUNTERS = text(
    "SELECT id, limit_tokens, limit_micro_usd, used_tokens, reserved_tokens, "
    "used_micro_usd, reserved_micro_usd FROM budget_counters "
    "WHERE id = ANY(CAST(:ids AS text[])) ORDER BY id"
)


@dataclass(slots=True)
class _Held:
    """A reservation as a batch sees it."""

    task_id: str
    tenant_id: str
    grant: Grant
    counters: list[str]
    stored: bool  # in the table before the batch (else made by it)


def run_batch(conn: Connection, ops: Sequence[LedgerOp]) -> list[LedgerAnswer | Exception]:
    """PostgreSQL: ``ops`` in order, in ``conn``'s transaction, in five statements
    whatever their number; each one's answer, or the error (a refusal, an unknown
    task) to raise for it.

    The batch locks the reservations it may settle, release or hand back (key order),
    then makes any new counter and locks every counter it may touch (id order), works
    the operations out here, and writes the counters and reservations back in one
    statement. Every batch (a lone reserve or settle is a batch of one) takes its locks
    in that order, so two cannot deadlock on them.
    """
    reserves = [op for op in ops if isinstance(op, Reservation)]
    held: dict[str, _Held] = {}
    for row in conn.execute(
        _PG_HELD,
        {
            "keys": sorted({op.call_key for op in ops}),
            "tasks": sorted({op.task_id for op in reserves if op.stale_prefix}),
        },
    ):
        grant = Grant(answer_tokens=row.answer_tokens, tokens=row.tokens, micro_usd=row.micro_usd)
        counters = json.loads(row.counters)
        held[row.call_key] = _Held(row.task_id, row.tenant_id, grant, counters, stored=True)
    tasks: set[tuple[str, str]] = set()
    newcomers: dict[str, tuple[str, Budget]] = {}
    if reserves:
        task_ids = sorted({op.task_id for op in reserves})
        tasks = {(r.id, r.tenant_id) for r in conn.execute(_PG_TASKS, {"ids": task_ids})}
        for op in reserves:
            if (op.task_id, op.tenant_id) in tasks:
                for budget in op.budgets:
                    newcomers.setdefault(budget.counter, (op.tenant_id, budget))
        if newcomers:
            ids = sorted(newcomers)
            conn.execute(
                _PG_NEW_COUNTERS,
                {
                    "ids": ids,
                    "tenants": [newcomers[i][0] for i in ids],
                    "lt": [newcomers[i][1].tokens for i in ids],
                    "lu": [newcomers[i][1].micro_usd for i in ids],
                },
            )
    touched = set(newcomers).union(*(h.counters for h in held.values()))
    counters = {row.id: Counter(*row) for row in conn.execute(_PG_LOCK, {"ids": sorted(touched)})}
    before = dict(counters)
    gone: set[str] = set()  # stored reservations the batch settled
    answers: list[LedgerAnswer | Exception] = []
    for next_op in ops:
        if isinstance(next_op, Settlement):
            answers.append(_batch_settle(held, counters, gone, next_op))
        else:
            answers.append(_batch_reserve(held, counters, gone, tasks, next_op))
    changed = sorted(i for i, c in counters.items() if c is not before[i])
    fresh = [(key, h) for key, h in held.items() if not h.stored]
    conn.execute(
        _PG_WRITE,
        {
            "ids": changed,
            "lt": [counters[i].limit_tokens for i in changed],
            "lu": [counters[i].limit_micro_usd for i in changed],
            "ut": [counters[i].used_tokens for i in changed],
            "rt": [counters[i].reserved_tokens for i in changed],
            "uu": [counters[i].used_micro_usd for i in changed],
            "ru": [counters[i].reserved_micro_usd for i in changed],
            "gone": sorted(gone),
            "keys": [key for key, _ in fresh],
            "tasks": [h.task_id for _, h in fresh],
            "tenants": [h.tenant_id for _, h in fresh],
            "tokens": [h.grant.tokens for _, h in fresh],
            "usd": [h.grant.micro_usd for _, h in fresh],
            "answers": [h.grant.answer_tokens for _, h in fresh],
            "counters": [json.dumps(h.counters) for _, h in fresh],
        },
    )
    return answers


def _batch_settle(
    held: dict[str, _Held], counters: dict[str, Counter], gone: set[str], op: Settlement
) -> list[Settled]:
    found = held.get(op.call_key)
    if found is None or found.task_id != op.task_id:
        return []
    del held[op.call_key]
    if found.stored:
        gone.add(op.call_key)
    settled = []
    for i in sorted(found.counters):
        c = counters[i] = replace(
            counters[i],
            reserved_tokens=counters[i].reserved_tokens - found.grant.tokens,
            reserved_micro_usd=counters[i].reserved_micro_usd - found.grant.micro_usd,
            used_tokens=counters[i].used_tokens + op.tokens,
            used_micro_usd=counters[i].used_micro_usd + op.micro_usd,
        )
        settled.append(
            Settled(i, c.used_tokens, c.used_micro_usd, c.limit_tokens, c.limit_micro_usd)
        )
    return settled


def _batch_reserve(
    held: dict[str, _Held],
    counters: dict[str, Counter],
    gone: set[str],
    tasks: set[tuple[str, str]],
    op: Reservation,
) -> Grant | Exception:
    first = held.get(op.call_key)
    if first is not None:
        return first.grant
    if (op.task_id, op.tenant_id) not in tasks:
        return _no_task(op.task_id)
    if op.stale_prefix:
        for key in [k for k, h in held.items() if h.task_id == op.task_id]:
            if key.startswith(op.stale_prefix):
                _batch_settle(held, counters, gone, Settlement(op.task_id, key, 0, 0))
    by_id = {b.counter: b for b in op.budgets}
    ids = sorted(by_id)
    # The counters take the limits of this call, as on SQLite.
    for i in ids:
        counters[i] = replace(
            counters[i], limit_tokens=by_id[i].tokens, limit_micro_usd=by_id[i].micro_usd
        )
    answer, short = _longest_answer(op.ask, [(by_id[i], counters[i]) for i in ids])
    if answer < op.ask.min_answer_tokens:
        assert short is not None
        return refusal(short, op.ask)
    grant = Grant(
        answer_tokens=answer,
        tokens=op.ask.prompt_tokens + answer,
        micro_usd=op.ask.micro_usd(answer),
    )
    for i in ids:
        counters[i] = replace(
            counters[i],
            reserved_tokens=counters[i].reserved_tokens + grant.tokens,
            reserved_micro_usd=counters[i].reserved_micro_usd + grant.micro_usd,
        )
    held[op.call_key] = _Held(op.task_id, op.tenant_id, grant, ids, stored=False)
    return grant


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
