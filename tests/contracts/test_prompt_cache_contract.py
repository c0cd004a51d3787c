"""One contract for every PromptCache: in-process LRU and Redis."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable

import pytest

from troupe.llm.cache import MemoryPromptCache, PromptCache, RedisPromptCache
from troupe.llm.messages import ChatResponse, TokenUsage

pytestmark = pytest.mark.integration

CacheFactory = Callable[..., PromptCache]


@pytest.fixture(params=["memory", "redis"])
async def make_cache(request: pytest.FixtureRequest) -> AsyncIterator[CacheFactory]:
    made: list[PromptCache] = []

    def make(*, ttl_s: float = 60, max_entries: int = 100) -> PromptCache:
        cache: PromptCache
        if request.param == "memory":
            cache = MemoryPromptCache(ttl_s=ttl_s, max_entries=max_entries)
        else:
            # A namespace per cache: the suite shares one Redis server.
            cache = RedisPromptCache(
                request.getfixturevalue("redis_url"),
                ttl_s=ttl_s,
                max_entries=max_entries,
                namespace=f"test-{secrets.token_hex(4)}",
            )
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.aclose()


def _answer(text: str) -> ChatResponse:
    return ChatResponse(
        provider="simulation",
        model="sim-small",
        content=text,
        usage=TokenUsage(prompt_tokens=40, completion_tokens=7, cached_tokens=3),
    )


async def test_a_stored_answer_is_returned_whole(make_cache: CacheFactory) -> None:
    cache = make_cache()
    await cache.put("acme", "k1", _answer("four"))
    assert await cache.get("acme", "k1") == _answer("four")


async def test_an_unknown_key_misses(make_cache: CacheFactory) -> None:
    cache = make_cache()
    await cache.put("acme", "k1", _answer("four"))
    assert await cache.get("acme", "k2") is None


async def test_a_tenant_never_reads_another_tenants_entry(make_cache: CacheFactory) -> None:
    cache = make_cache()
    await cache.put("acme", "k1", _answer("acme's secret"))
    assert await cache.get("globex", "k1") is None
    await cache.put("globex", "k1", _answer("globex's own"))
    assert (await cache.get("acme", "k1")) == _answer("acme's secret")
    assert (await cache.get("globex", "k1")) == _answer("globex's own")


async def test_an_entry_expires_after_its_ttl(make_cache: CacheFactory) -> None:
    cache = make_cache(ttl_s=0.2)
    await cache.put("acme", "k1", _answer("four"))
    assert await cache.get("acme", "k1") is not None
    await asyncio.sleep(0.35)
    assert await cache.get("acme", "k1") is None


async def test_the_least_recently_used_entry_goes_first(make_cache: CacheFactory) -> None:
    cache = make_cache(max_entries=3)
    for key in ("a", "b", "c"):
        await cache.put("acme", key, _answer(key))
    assert await cache.get("acme", "a") is not None  # a is now the most recent
    await cache.put("acme", "d", _answer("d"))
    present = {key for key in "abcd" if await cache.get("acme", key) is not None}
    assert present == {"a", "c", "d"}


async def test_putting_again_replaces_the_entry(make_cache: CacheFactory) -> None:
    cache = make_cache()
    await cache.put("acme", "k1", _answer("old"))
    await cache.put("acme", "k1", _answer("new"))
    assert await cache.get("acme", "k1") == _answer("new")
