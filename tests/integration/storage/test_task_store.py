"""SqlTaskStore on SQLite and PostgreSQL: one suite, both databases."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from troupe.domain import EventType, Strategy, TaskError, TaskEvent, TaskStatus, Usage
from troupe.errors import NotFound
from troupe.orchestrator.launcher import new_task_id
from troupe.storage.repositories import LLMCallRecord, NewTask, SqlTaskStore, _append

pytestmark = pytest.mark.integration


@pytest.fixture
def store(migrated_engine: AsyncEngine) -> SqlTaskStore:
    return SqlTaskStore(migrated_engine)


async def _new(store: SqlTaskStore, *, tenant: str = "acme", session_id: str | None = None) -> str:
    task_id = new_task_id()
    await store.create_task(
        NewTask(
            id=task_id,
            tenant_id=tenant,
            session_id=session_id,
            query="what is 2+2?",
            strategy=Strategy.SIMPLE,
            token_budget=1000,
            workflow_id=f"task-{task_id}",
        )
    )
    return task_id


def _call(key: str, prompt: int = 10, completion: int = 5, cost: int = 7) -> LLMCallRecord:
    return LLMCallRecord(
        call_key=key,
        provider="simulation",
        model="sim-small",
        usage=Usage(prompt_tokens=prompt, completion_tokens=completion, cost_micro_usd=cost),
        cached_tokens=0,
        latency_ms=3,
    )


async def test_created_task_is_queued_with_a_submitted_event(store: SqlTaskStore) -> None:
    task_id = await _new(store)
    task = await store.get_task("acme", task_id)
    assert task.status is TaskStatus.QUEUED
    assert task.created_at.tzinfo is not None
    events = await store.events_after("acme", task_id, 0)
    assert [(e.seq, e.type) for e in events] == [(1, EventType.SUBMITTED)]


async def test_another_tenant_cannot_see_the_task_or_its_events(store: SqlTaskStore) -> None:
    task_id = await _new(store, tenant="acme")
    with pytest.raises(NotFound):
        await store.get_task("globex", task_id)
    assert await store.events_after("globex", task_id, 0) == []
    assert (await store.list_tasks("globex")).items == []


async def test_a_session_id_of_another_tenant_is_not_found(store: SqlTaskStore) -> None:
    await _new(store, tenant="acme", session_id="chat-1")
    with pytest.raises(NotFound):
        await _new(store, tenant="globex", session_id="chat-1")


async def test_llm_call_is_stored_once_per_key_and_added_to_totals(store: SqlTaskStore) -> None:
    task_id = await _new(store)
    assert await store.record_llm_call("acme", task_id, _call("run:1:1:0"))
    assert not await store.record_llm_call("acme", task_id, _call("run:1:1:0"))
    assert await store.record_llm_call("acme", task_id, _call("run:1:2:0", 20, 10, 11))
    task = await store.get_task("acme", task_id)
    assert task.usage == Usage(prompt_tokens=30, completion_tokens=15, cost_micro_usd=18)
    assert len(await store.usage_calls("acme", task_id)) == 2
    llm_events = [
        e for e in await store.events_after("acme", task_id, 0) if e.type is EventType.LLM_CALL
    ]
    assert len(llm_events) == 2


async def test_concurrent_duplicate_calls_are_counted_once(store: SqlTaskStore) -> None:
    task_id = await _new(store)
    stored = await asyncio.gather(
        *(store.record_llm_call("acme", task_id, _call("same-key")) for _ in range(5))
    )
    assert sorted(stored) == [False] * 4 + [True]
    assert (await store.get_task("acme", task_id)).usage.prompt_tokens == 10


async def test_finish_happens_once_and_records_the_ending(store: SqlTaskStore) -> None:
    task_id = await _new(store)
    await store.mark_started("acme", task_id, attempt=1)
    error = TaskError(code="boom", message="it broke")
    ended = await store.finish("acme", task_id, TaskStatus.FAILED, error=error)
    assert ended.task is not None
    assert ended.task.status is TaskStatus.FAILED
    late = await store.finish("acme", task_id, TaskStatus.COMPLETED, result="late")
    assert late.task is None
    task = await store.get_task("acme", task_id)
    assert task.status is TaskStatus.FAILED
    assert task.error == error
    assert task.result is None
    assert task.finished_at is not None
    last = (await store.events_after("acme", task_id, 0))[-1]
    assert last.type is EventType.FAILED
    assert last.data["error"] == {"code": "boom", "message": "it broke"}


async def test_started_does_not_revive_an_ended_task(store: SqlTaskStore) -> None:
    task_id = await _new(store)
    await store.finish("acme", task_id, TaskStatus.CANCELLED)
    started = await store.mark_started("acme", task_id, attempt=2)
    assert started.task.status is TaskStatus.CANCELLED
    assert not started.first


async def test_concurrent_events_are_numbered_gap_free(store: SqlTaskStore) -> None:
    task_id = await _new(store)
    await asyncio.gather(
        *(
            store.append_event("acme", task_id, EventType.CANCEL_REQUESTED, {"n": n})
            for n in range(20)
        )
    )
    seqs = [e.seq for e in await store.events_after("acme", task_id, 0)]
    assert seqs == list(range(1, 22))
    assert [e.seq for e in await store.events_after("acme", task_id, 15)] == list(range(16, 22))


async def test_listing_pages_newest_first_and_filters(store: SqlTaskStore) -> None:
    ids = [await _new(store, session_id="s1" if n % 2 else None) for n in range(5)]
    await store.finish("acme", ids[0], TaskStatus.COMPLETED, result="ok")

    first = await store.list_tasks("acme", limit=2)
    assert [t.id for t in first.items] == [ids[4], ids[3]]
    assert first.next_cursor is not None
    second = await store.list_tasks("acme", limit=2, before=first.next_cursor)
    assert [t.id for t in second.items] == [ids[2], ids[1]]
    third = await store.list_tasks("acme", limit=2, before=second.next_cursor)
    assert [t.id for t in third.items] == [ids[0]]
    assert third.next_cursor is None

    in_session = await store.list_tasks("acme", session_id="s1")
    assert {t.id for t in in_session.items} == {ids[1], ids[3]}
    done = await store.list_tasks("acme", status=TaskStatus.COMPLETED)
    assert [t.id for t in done.items] == [ids[0]]


async def test_finishing_with_the_call_stores_both_once(store: SqlTaskStore) -> None:
    task_id = await _new(store)
    await store.mark_started("acme", task_id, attempt=1)
    first = await store.finish(
        "acme", task_id, TaskStatus.COMPLETED, result="42", call=_call("k:0", 10, 5, 7)
    )
    assert first.call_stored
    assert first.task is not None
    assert first.task.usage == Usage(prompt_tokens=10, completion_tokens=5, cost_micro_usd=7)
    again = await store.finish(
        "acme", task_id, TaskStatus.COMPLETED, result="42", call=_call("k:0", 10, 5, 7)
    )
    assert (again.task, again.call_stored) == (None, False)
    assert len(await store.usage_calls("acme", task_id)) == 1


async def test_a_call_that_lands_after_the_task_ended_is_still_counted(
    store: SqlTaskStore,
) -> None:
    task_id = await _new(store)
    await store.finish("acme", task_id, TaskStatus.CANCELLED)
    late = await store.finish(
        "acme", task_id, TaskStatus.COMPLETED, result="late", call=_call("k:0", 10, 5, 7)
    )
    assert late.task is None
    assert late.call_stored
    task = await store.get_task("acme", task_id)
    assert task.status is TaskStatus.CANCELLED
    assert task.usage.total_tokens == 15


async def test_committed_events_are_handed_over_exactly_as_stored(
    migrated_engine: AsyncEngine,
) -> None:
    handed: list[tuple[str, Sequence[TaskEvent]]] = []
    store = SqlTaskStore(migrated_engine, on_events=lambda t, events: handed.append((t, events)))
    task_id = await _new(store)
    await store.mark_started("acme", task_id, attempt=1)
    await store.record_llm_call("acme", task_id, _call(f"{task_id}:a"))
    assert [(t, [(e.seq, e.type) for e in events]) for t, events in handed] == [
        (task_id, [(1, EventType.SUBMITTED)]),
        (task_id, [(2, EventType.STARTED)]),
        (task_id, [(3, EventType.LLM_CALL)]),
    ]
    # What a reader would otherwise have read back: the same events, field for field.
    assert [e for _, events in handed for e in events] == await store.events_after(
        "acme", task_id, 0
    )


async def test_a_write_that_fails_hands_nothing_over(migrated_engine: AsyncEngine) -> None:
    handed: list[list[int]] = []
    store = SqlTaskStore(
        migrated_engine, on_events=lambda _, events: handed.append([e.seq for e in events])
    )
    task_id = await _new(store)

    def append_then_fail(conn: Connection) -> None:
        _append(conn, "acme", task_id, [(EventType.CANCEL_REQUESTED, {})])
        raise RuntimeError("fails after appending")

    with pytest.raises(RuntimeError):
        await store._write(append_then_fail)
    await store.append_event("acme", task_id, EventType.CANCEL_REQUESTED, {})
    # The rolled-back event was neither stored nor handed over; the next one was both.
    assert handed == [[1], [2]]
    assert [e.seq for e in await store.events_after("acme", task_id, 0)] == [1, 2]
