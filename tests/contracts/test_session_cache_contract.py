"""One contract for every SessionCache: in-process and Redis."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from troupe.storage.kv.base import SessionCache
from troupe.storage.kv.memory import MemorySessionCache
from troupe.storage.kv.redis import RedisSessionCache

pytestmark = pytest.mark.integration


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[SessionCache]:
    impl: SessionCache
    if request.param == "memory":
        impl = MemorySessionCache(ttl_s=0.3, max_entries=100)
    else:
        impl = RedisSessionCache(
            request.getfixturevalue("redis_url"),
            ttl_s=0.3,
            namespace=f"test-{secrets.token_hex(4)}",
        )
    yield impl
    await impl.aclose()


async def test_a_value_put_at_the_current_generation_is_read_back(cache: SessionCache) -> None:
    assert await cache.get("acme:s1") == (None, 0)
    assert await cache.put("acme:s1", b"state-1", generation=0)
    assert await cache.get("acme:s1") == (b"state-1", 0)
    assert await cache.get("acme:s2") == (None, 0)


async def test_a_copy_read_before_a_change_is_not_put_back_after_it(
    cache: SessionCache,
) -> None:
    _, generation = await cache.get("acme:s1")  # a reader reads the record...
    await cache.drop("acme:s1")  # ...a writer changes it meanwhile
    assert not await cache.put("acme:s1", b"stale", generation=generation)
    assert await cache.get("acme:s1") == (None, generation + 1)
    assert await cache.put("acme:s1", b"fresh", generation=generation + 1)
    assert (await cache.get("acme:s1"))[0] == b"fresh"


async def test_drop_forgets_the_value(cache: SessionCache) -> None:
    await cache.put("acme:s1", b"state", generation=0)
    await cache.drop("acme:s1")
    assert (await cache.get("acme:s1"))[0] is None


async def test_values_expire_after_their_lifetime(cache: SessionCache) -> None:
    await cache.put("acme:s1", b"state", generation=0)
    deadline = asyncio.get_running_loop().time() + 5
    while (await cache.get("acme:s1"))[0] is not None:
        assert asyncio.get_running_loop().time() < deadline, "the value never expired"
        await asyncio.sleep(0.05)


async def test_the_in_process_cache_keeps_at_most_its_entries() -> None:
    cache = MemorySessionCache(ttl_s=60, max_entries=2)
    for n in range(3):  # the third put evicts the least recently used, s0
        await cache.put(f"s{n}", b"x", generation=0)
    assert [(await cache.get(f"s{n}"))[0] for n in range(3)] == [None, b"x", b"x"]
