"""Event fan-out over Redis pub/sub and rate limits in Redis, for API and worker processes
on many machines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

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


class RedisEventFanout:
    """Notifications through Redis PUBLISH/SUBSCRIBE."""

    def __init__(self, url: str) -> None:
        self._redis: Redis = Redis.from_url(url)

    async def publish(self, channel: str) -> None:
        await self._redis.publish(_PREFIX + channel, b"1")

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
