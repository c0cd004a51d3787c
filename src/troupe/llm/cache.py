"""Prompt cache: an identical request of the same tenant is answered without a provider call.

Exact match only. The key is a SHA-256 over the canonical JSON of the whole request
(model, messages, response format, sampling parameters, max_tokens), so any change to
what the model would see is a different entry. Entries are tenant-scoped: the tenant is
part of the storage key, and a tenant never reads another's entry. Both backends keep
entries for ``ttl_s`` and at most ``max_entries`` of them, dropping the least recently
used first.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from troupe.llm.messages import ChatRequest, ChatResponse

if TYPE_CHECKING:
    from redis.asyncio import Redis


def cache_key(request: ChatRequest) -> str:
    """The canonical hash of everything in the request that shapes the answer."""
    canonical = json.dumps(
        request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class PromptCache(Protocol):
    async def get(self, tenant_id: str, key: str) -> ChatResponse | None:
        """The tenant's live entry under ``key``, or None."""

    async def put(self, tenant_id: str, key: str, response: ChatResponse) -> None:
        """Store (or refresh) the tenant's entry under ``key``."""

    async def aclose(self) -> None: ...


class MemoryPromptCache:
    """An LRU dictionary in this process: the embedded default."""

    def __init__(
        self,
        *,
        ttl_s: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, ChatResponse]] = OrderedDict()

    async def get(self, tenant_id: str, key: str) -> ChatResponse | None:
        slot = (tenant_id, key)
        entry = self._entries.get(slot)
        if entry is None:
            return None
        expires, response = entry
        if expires <= self._clock():
            del self._entries[slot]
            return None
        self._entries.move_to_end(slot)
        return response

    async def put(self, tenant_id: str, key: str, response: ChatResponse) -> None:
        slot = (tenant_id, key)
        self._entries[slot] = (self._clock() + self._ttl_s, response)
        self._entries.move_to_end(slot)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def aclose(self) -> None:
        self._entries.clear()


# Entries are plain keys with a TTL; a sorted set ranks them by last use so the bound
# can drop the least recently used. Expired keys leave stale members behind, which the
# bound (or the trim of members older than the TTL) removes later.

# KEYS[1] entry, KEYS[2] index; ARGV: value, ttl_us, now_us, member, max_entries, prefix
_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', math.max(1, math.floor(tonumber(ARGV[2]) / 1000)))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[2]))
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if excess > 0 then
  local dropped = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #dropped, 2 do redis.call('DEL', ARGV[6] .. dropped[i]) end
end
return 1
"""

# KEYS[1] entry, KEYS[2] index; ARGV: now_us, member
_GET = """
local value = redis.call('GET', KEYS[1])
if value then redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[2]) end
return value
"""


class RedisPromptCache:
    """Entries in Redis, shared by every API and worker process of a deployment."""

    def __init__(
        self, url: str, *, ttl_s: float, max_entries: int, namespace: str = "troupe"
    ) -> None:
        from redis.asyncio import Redis

        self._redis: Redis = Redis.from_url(url)
        self._prefix = f"{namespace}:llm-cache:"
        self._index = self._prefix + "index"
        self._ttl_us = max(1000, round(ttl_s * 1_000_000))
        self._max_entries = max_entries
        self._put = self._redis.register_script(_PUT)
        self._get = self._redis.register_script(_GET)

    @staticmethod
    def _member(tenant_id: str, key: str) -> str:
        # The key is fixed-length hex at the end: unambiguous whatever the tenant id holds.
        return f"{tenant_id}:{key}"

    async def get(self, tenant_id: str, key: str) -> ChatResponse | None:
        member = self._member(tenant_id, key)
        raw = await self._get(keys=[self._prefix + member, self._index], args=[_now_us(), member])
        if raw is None:
            return None
        return ChatResponse.model_validate_json(raw)

    async def put(self, tenant_id: str, key: str, response: ChatResponse) -> None:
        member = self._member(tenant_id, key)
        await self._put(
            keys=[self._prefix + member, self._index],
            args=[
                response.model_dump_json(),
                self._ttl_us,
                _now_us(),
                member,
                self._max_entries,
                self._prefix,
            ],
        )

    async def aclose(self) -> None:
        await self._redis.aclose()


def _now_us() -> int:
    # Microseconds: two uses of one cache never share a score (a round trip is longer),
    # so the least recently used entry is always well defined.
    return time.time_ns() // 1_000
