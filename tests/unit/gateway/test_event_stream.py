"""When a stream reader may use the events handed over instead of reading storage."""

from __future__ import annotations

from datetime import UTC, datetime

from troupe.domain import EventType, TaskEvent
from troupe.gateway.routes.events import _carrying_on


def _events(*seqs: int) -> list[TaskEvent]:
    at = datetime(2026, 11, 27, tzinfo=UTC)
    return [
        TaskEvent(task_id="t", seq=s, type=EventType.LLM_CALL, data={}, created_at=at) for s in seqs
    ]


def test_events_that_carry_on_from_the_cursor_are_used() -> None:
    assert [e.seq for e in _carrying_on(_events(5, 6, 7), 4) or []] == [5, 6, 7]


def test_events_the_reader_has_already_seen_are_left_out() -> None:
    # Read from storage meanwhile: only the rest is new.
    assert [e.seq for e in _carrying_on(_events(3, 4, 5, 6), 4) or []] == [5, 6]


def test_a_gap_means_storage_must_be_read() -> None:
    assert _carrying_on(_events(6, 7), 4) is None  # 5 came from elsewhere
    assert _carrying_on(_events(5, 7), 4) is None  # 6 came from elsewhere


def test_nothing_new_means_storage_must_be_read() -> None:
    assert _carrying_on([], 4) is None
    assert _carrying_on(_events(3, 4), 4) is None
