"""The in-process fan-out hands committed events to this process's stream readers."""

from __future__ import annotations

from datetime import UTC, datetime

from troupe.domain import EventType, TaskEvent
from troupe.storage.kv import memory
from troupe.storage.kv.memory import MemoryEventFanout


def _event(seq: int) -> TaskEvent:
    return TaskEvent(
        task_id="t",
        seq=seq,
        type=EventType.NODE_STARTED,
        data={"node_id": f"n{seq}"},
        created_at=datetime(2026, 11, 27, tzinfo=UTC),
    )


async def test_every_listener_takes_its_own_copy_in_seq_order() -> None:
    fanout = MemoryEventFanout()
    async with fanout.listen("t") as one, fanout.listen("t") as two:
        fanout.offer("t", [_event(4), _event(5)])
        fanout.offer("t", [_event(2), _event(3)])  # an earlier commit handed over later
        assert [e.seq for e in one.take()] == [2, 3, 4, 5]
        assert [e.seq for e in two.take()] == [2, 3, 4, 5]
        assert one.take() == []


async def test_a_listener_whose_reader_falls_behind_drops_what_it_held() -> None:
    fanout = MemoryEventFanout()
    held_at_most = memory._MAX_HELD
    async with fanout.listen("t") as listener:
        fanout.offer("t", [_event(seq) for seq in range(1, held_at_most + 1)])
        fanout.offer("t", [_event(held_at_most + 1)])  # one too many: all dropped
        fanout.offer("t", [_event(held_at_most + 2)])
        # What is left starts after a gap, so its reader reads storage instead.
        assert [e.seq for e in listener.take()] == [held_at_most + 2]
