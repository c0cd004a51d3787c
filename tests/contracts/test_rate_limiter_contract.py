"""One contract for every RateLimiter: in-process and Redis token buckets."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from troupe.storage.kv.base import RateLimiter
from troupe.storage.kv.memory import MemoryRateLimiter
from troupe.storage.kv.redis import RedisRateLimiter

pytestmark = pytest.mark.integration


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    impl: RateLimiter
    if request.param == "memory":
        impl = MemoryRateLimiter()
    else:
        impl = RedisRateLimiter(
            request.getfixturevalue("redis_url"), namespace=f"test-{secrets.token_hex(4)}"
        )
    yield impl
    await impl.aclose()


async def test_a_burst_passes_then_the_rate_applies(limiter: RateLimiter) -> None:
    waits = [await limiter.take("t", rate=2, burst=3) for _ in range(4)]
    assert waits[:3] == [0, 0, 0]
    assert 0.3 < waits[3] <= 0.5  # one token takes 1/2 s to come back


async def test_tokens_come_back_at_the_rate(limiter: RateLimiter) -> None:
    for _ in range(2):
        assert await limiter.take("t", rate=10, burst=2) == 0
    assert await limiter.take("t", rate=10, burst=2) > 0
    await asyncio.sleep(0.25)  # 2.5 tokens' worth, capped at the burst of 2
    assert await limiter.take("t", rate=10, burst=2) == 0
    assert await limiter.take("t", rate=10, burst=2) == 0
    assert await limiter.take("t", rate=10, burst=2) > 0


async def test_buckets_are_independent(limiter: RateLimiter) -> None:
    assert await limiter.take("a", rate=1, burst=1) == 0
    assert await limiter.take("a", rate=1, burst=1) > 0
    assert await limiter.take("b", rate=1, burst=1) == 0
