"""One contract for every EventFanout: in-process and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from troupe.domain import EventType, TaskEvent
from troupe.storage.kv.base import EventFanout
from troupe.storage.kv.memory import MemoryEventFanout
from troupe.storage.kv.redis import RedisEventFanout

pytestmark = pytest.mark.integration


@pytest.fixture(params=["memory", "redis"])
async def fanout(request: pytest.FixtureRequest) -> AsyncIterator[EventFanout]:
    impl: EventFanout
    if request.param == "memory":
        impl = MemoryEventFanout()
    else:
        impl = RedisEventFanout(request.getfixturevalue("redis_url"))
    yield impl
    await impl.aclose()


async def test_a_listener_is_woken_by_a_publish_on_its_channel(fanout: EventFanout) -> None:
    async with fanout.listen("task-a") as listener:
        await fanout.publish("task-a")
        assert await listener.wait(2.0)


async def test_a_listener_is_not_woken_by_another_channel(fanout: EventFanout) -> None:
    async with fanout.listen("task-a") as listener:
        await fanout.publish("task-b")
        assert not await listener.wait(0.2)


async def test_every_listener_of_a_channel_is_woken(fanout: EventFanout) -> None:
    async with fanout.listen("task-a") as one, fanout.listen("task-a") as two:
        await fanout.publish("task-a")
        assert list(await asyncio.gather(one.wait(2.0), two.wait(2.0))) == [True, True]


async def test_a_healthy_fanout_answers_ping(fanout: EventFanout) -> None:
    await fanout.ping()


async def test_wait_times_out_without_a_publish(fanout: EventFanout) -> None:
    async with fanout.listen("quiet") as listener:
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert not await listener.wait(0.2)
        assert loop.time() - began >= 0.19


async def test_a_publish_while_nobody_waits_is_seen_by_the_next_wait(fanout: EventFanout) -> None:
    async with fanout.listen("task-a") as listener:
        await fanout.publish("task-a")
        await asyncio.sleep(0.05)
        assert await listener.wait(2.0)


def _event(seq: int, task_id: str = "task-a") -> TaskEvent:
    return TaskEvent(
        task_id=task_id,
        seq=seq,
        type=EventType.LLM_CALL,
        data={"n": seq},
        created_at=datetime(2026, 11, 27, tzinfo=UTC),
    )


async def test_a_listener_takes_only_what_was_offered_on_its_channel_while_it_listened(
    fanout: EventFanout,
) -> None:
    fanout.offer("task-a", [_event(1)])  # nobody listens yet: gone
    async with fanout.listen("task-a") as listener:
        fanout.offer("task-b", [_event(1, "task-b")])
        fanout.offer("task-a", [_event(3)])
        fanout.offer("task-a", [_event(2)])
        # In-process: what was offered, by seq. Across processes: nothing (the reader
        # reads storage); never another channel's, never something not offered.
        assert listener.take() in ([], [_event(2), _event(3)])
        assert listener.take() == []
