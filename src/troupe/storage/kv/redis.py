"""Event fan-out over Redis pub/sub, rate limits and session state in Redis, for API and
worker processes on many machines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from troupe.domain import TaskEvent

_PREFIX = "troupe:events:"


class _RedisListener:
    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub

    async def wait(self, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            if message is not None:
                return True
        return False

    def take(self) -> list[TaskEvent]:
        return []  # notifications only: the reader reads storage


class RedisEventFanout:
    """Notifications through Redis PUBLISH/SUBSCRIBE."""

    def __init__(self, url: str) -> None:
        self._redis: Redis = Redis.from_url(url)

    async def publish(self, channel: str) -> None:
        await self._redis.publish(_PREFIX + channel, b"1")

    def offer(self, channel: str, events: Sequence[TaskEvent]) -> None:
        return None  # listeners may be in other processes: they read storage

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[_RedisListener]:
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(_PREFIX + channel)
        try:
            yield _RedisListener(pubsub)
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def ping(self) -> None:
        await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()


# KEYS[1] bucket; ARGV: rate per second, burst, now (seconds). Returns the wait as text
# (a Lua number would come back truncated to an integer).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisRateLimiter:
    """Token buckets in Redis, one Lua script per request: shared by every API process."""

    def __init__(self, url: str, *, namespace: str = "troupe") -> None:
        self._redis: Redis = Redis.from_url(url)
        self._prefix = f"{namespace}:rate:"
        self._take = self._redis.register_script(_TAKE)

    async def take(self, key: str, *, rate: float, burst: int) -> float:
        # The client's clock: API processes on one deployment keep it close enough.
        wait = await self._take(keys=[self._prefix + key], args=[rate, burst, time.time()])
        return float(wait)

    async def aclose(self) -> None:
        await self._redis.aclose()


# KEYS[1] value, KEYS[2] generation; ARGV: value, generation read, ttl ms.
_PUT_IF_GENERATION = """
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""

# KEYS[1] value, KEYS[2] generation; ARGV: generation lifetime ms.
_DROP = """
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"""


class RedisSessionCache:
    """Session state in Redis, shared by every API and worker process.

    A generation outlives the values it guards (twice their lifetime), so a stale
    copy read before a change can never be put back after it.
    """

    def __init__(self, url: str, *, ttl_s: float, namespace: str = "troupe") -> None:
        self._redis: Redis = Redis.from_url(url)
        self._prefix = f"{namespace}:session:"
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._put = self._redis.register_script(_PUT_IF_GENERATION)
        self._drop = self._redis.register_script(_DROP)

    def _keys(self, key: str) -> list[str]:
        return [f"{self._prefix}{key}", f"{self._prefix}{key}:generation"]

    async def get(self, key: str) -> tuple[bytes | None, int]:
        value, generation = await self._redis.mget(self._keys(key))
        if isinstance(value, str):  # only with decode_responses, which this client is not
            value = value.encode()
        return value, int(generation or 0)

    async def put(self, key: str, value: bytes, *, generation: int) -> bool:
        stored = await self._put(keys=self._keys(key), args=[value, generation, self._ttl_ms])
        return bool(stored)

    async def drop(self, key: str) -> None:
        await self._drop(keys=self._keys(key), args=[self._ttl_ms * 2])

    async def aclose(self) -> None:
        await self._redis.aclose()
