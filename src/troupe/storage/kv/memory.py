"""In-process event fan-out, rate limits and session cache for the embedded
single-process platform."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from troupe.domain import TaskEvent

# Events a listener holds for its reader at most; past that it drops them, and its
# reader, finding a gap, reads storage instead.
_MAX_HELD = 1000


class _MemoryListener:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._held: list[TaskEvent] = []

    def notify(self) -> None:
        self._event.set()

    def hold(self, events: Sequence[TaskEvent]) -> None:
        if len(self._held) + len(events) > _MAX_HELD:
            self._held.clear()
            return
        out_of_order = bool(self._held) and self._held[-1].seq > events[0].seq
        self._held.extend(events)
        if out_of_order:  # an earlier commit handed over after a later one
            self._held.sort(key=lambda e: e.seq)

    def take(self) -> list[TaskEvent]:
        held, self._held = self._held, []
        return held

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

    def offer(self, channel: str, events: Sequence[TaskEvent]) -> None:
        if events:
            for listener in self._listeners.get(channel, ()):
                listener.hold(events)

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


class MemoryRateLimiter:
    """Token buckets in this process: right for `troupe serve`, wrong across processes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, at)

    async def take(self, key: str, *, rate: float, burst: int) -> float:
        now = self._clock()
        tokens, at = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - at) * rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / rate

    async def aclose(self) -> None:
        self._buckets.clear()


class MemorySessionCache:
    """Session state in this process, least recently used first out, with a lifetime."""

    def __init__(
        self, *, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._values: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # → (value, until)
        self._generations: dict[str, int] = {}

    async def get(self, key: str) -> tuple[bytes | None, int]:
        generation = self._generations.get(key, 0)
        held = self._values.get(key)
        if held is None:
            return None, generation
        value, until = held
        if until <= self._clock():
            del self._values[key]
            return None, generation
        self._values.move_to_end(key)
        return value, generation

    async def put(self, key: str, value: bytes, *, generation: int) -> bool:
        if self._generations.get(key, 0) != generation:
            return False
        self._values[key] = (value, self._clock() + self._ttl_s)
        self._values.move_to_end(key)
        while len(self._values) > self._max_entries:
            evicted, _ = self._values.popitem(last=False)
            self._generations.pop(evicted, None)
        return True

    async def drop(self, key: str) -> None:
        self._values.pop(key, None)
        self._generations[key] = self._generations.get(key, 0) + 1

    async def aclose(self) -> None:
        self._values.clear()
        self._generations.clear()
