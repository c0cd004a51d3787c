"""In-process event fan-out for the embedded single-process platform."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class _MemoryListener:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
        except TimeoutError:
            return False
        self._event.clear()
        return True


class MemoryEventFanout:
    """Listeners in this process only: right for `troupe serve`, wrong across processes."""

    def __init__(self) -> None:
        self._listeners: defaultdict[str, set[_MemoryListener]] = defaultdict(set)

    async def publish(self, channel: str) -> None:
        for listener in self._listeners.get(channel, ()):
            listener.notify()

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[_MemoryListener]:
        listener = _MemoryListener()
        self._listeners[channel].add(listener)
        try:
            yield listener
        finally:
            self._listeners[channel].discard(listener)
            if not self._listeners[channel]:
                del self._listeners[channel]

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._listeners.clear()
