"""Event fan-out over Redis pub/sub, for API and worker processes on many machines."""

from __future__ import annotations

import asyncio
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
