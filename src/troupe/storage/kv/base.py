"""Event fan-out: wake the readers of a task's stream when its events change.

Storage stays the record; a notification only says "read again". A lost
notification costs a reader one poll interval, never an event. Within one process the
writer may also hand the committed events over (``offer``), so that a reader there need
not read back what was just written; a reader still reads storage whenever the events
handed over do not carry on exactly where it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from troupe.domain import TaskEvent


class Listener(Protocol):
    async def wait(self, seconds: float) -> bool:
        """Wait for a notification; True if one arrived, False on timeout."""

    def take(self) -> list[TaskEvent]:
        """The events handed over since the last take, by seq (maybe with gaps, maybe
        none: only a writer in this process hands any over)."""


class RateLimiter(Protocol):
    async def take(self, key: str, *, rate: float, burst: int) -> float:
        """Take one token from ``key``'s bucket (``burst`` deep, refilled at ``rate`` per
        second): 0 when taken, else the seconds until one will be there."""

    async def aclose(self) -> None: ...


class EventFanout(Protocol):
    async def publish(self, channel: str) -> None:
        """Wake every listener of ``channel``."""

    def offer(self, channel: str, events: Sequence[TaskEvent]) -> None:
        """Hand events just committed on ``channel`` to its listeners in this process
        (a fan-out across processes only notifies, and ignores them)."""

    def listen(self, channel: str) -> AbstractAsyncContextManager[Listener]:
        """Listen to ``channel`` while the context is open."""

    async def ping(self) -> None:
        """Raise when the fan-out cannot deliver (its server is unreachable)."""

    async def aclose(self) -> None: ...


class SessionCache(Protocol):
    """Hot copies of session state, each guarded by a generation: a writer that read
    the record before a change cannot put its stale copy back after it."""

    async def get(self, key: str) -> tuple[bytes | None, int]:
        """The cached value (None: not cached) and the key's current generation."""

    async def put(self, key: str, value: bytes, *, generation: int) -> bool:
        """Cache ``value`` unless the key changed since ``generation`` was read."""

    async def drop(self, key: str) -> None:
        """The record changed: forget the value and start a new generation."""

    async def aclose(self) -> None: ...
