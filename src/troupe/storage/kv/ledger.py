"""The budget ledger in Redis: reserves and settles in one Lua script.

The same semantics as the database ledger (``storage/ledger.py``): a call reserves its
ask against every budget at once, all or none; a repeated key gets its first grant;
stale reservations of the task are released first; a settle or a release happens
once (whoever deletes the reservation does it). A script runs alone on the server, so
no lock is held and no two reservations interleave; each operation takes ~20 µs of
server time. The operations this process's agents ask for while a script is on its way
go out together as the next one (``storage/batching.py``): one command, one JSON
argument and one reply for all of them, which is most of what an operation costs the
client.

Keys (``troupe:`` by default): ``budget:<counter id>`` a hash per counter (``lt``,
``lu`` limits, ``ut``/``rt`` used/reserved tokens, ``uu``/``ru`` micro-dollars);
``resv:<call key>`` a hash per reservation; ``task-resv:<task id>`` the set of a task's
reservations. Scripts name keys they compute, so this needs one Redis server (or a
primary with replicas), not a Cluster.

A call's usage is settled here before it is recorded in the database: a crash between
the two leaves the usage counted (never the reverse), so the limits hold.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from troupe.storage.batching import Batcher
from troupe.storage.ledger import Ask, Budget, Counter, Grant, Settled, refusal

_COMMON = """
local prefix = ARGV[1]
local function num(v)
  if v == false or v == nil or v == '' then return nil end
  return tonumber(v)
end
local function settle(key, task, tokens, usd)
  -- Checked before anything is written: Redis keeps a failed script's earlier writes.
  tokens, usd = tonumber(tokens), tonumber(usd)
  if not tokens or not usd then error('a settle takes numbers of tokens and micro-dollars') end
  local rkey = prefix .. 'resv:' .. key
  local r = redis.call('HMGET', rkey, 'task', 't', 'u', 'ids')
  if not r[1] or r[1] ~= task then return {} end
  redis.call('DEL', rkey)
  redis.call('SREM', prefix .. 'task-resv:' .. task, key)
  local out = {}
  for _, id in ipairs(cjson.decode(r[4])) do
    local ckey = prefix .. 'budget:' .. id
    -- 0 - x, not -x: Lua prints -0 as "-0", which HINCRBY refuses
    redis.call('HINCRBY', ckey, 'rt', 0 - tonumber(r[2]))
    redis.call('HINCRBY', ckey, 'ru', 0 - tonumber(r[3]))
    local ut = redis.call('HINCRBY', ckey, 'ut', tokens)
    local uu = redis.call('HINCRBY', ckey, 'uu', usd)
    local lim = redis.call('HMGET', ckey, 'lt', 'lu')
    table.insert(out, {id, ut, uu, lim[1] or '', lim[2] or ''})
  end
  return out
end
"""

# ARGV: prefix, then the batch as one JSON array of operations (one JSON argument is far
# cheaper for the client to send than twenty per operation):
#   {"r", {key, task, tenant, stale prefix ('' for none), prompt, answer, min answer,
#          input price, output price, {id, limit tokens, limit usd} per budget ('' for
#          no limit)}}: a reserve; its answer {answer, tokens, usd}, or {answer, -1, -1,
#          short id, room tokens, room usd} when it does not fit;
#   {"s", key, task, tokens, usd}: a settle; its answer the counters after, or {}.
# An operation that fails answers {"!", error} and leaves the others alone.
_BATCH = (
    _COMMON
    + """
local function reserve(a)
  local key, task, tenant, stale = a[1], a[2], a[3], a[4]
  local prompt, answer, min_answer, pin, pout = a[5], a[6], a[7], a[8], a[9]
  local n = #a - 9
  local rkey = prefix .. 'resv:' .. key
  local held = redis.call('HMGET', rkey, 'a', 't', 'u')
  if held[1] then return {tonumber(held[1]), tonumber(held[2]), tonumber(held[3])} end
  if stale ~= '' then
    for _, k in ipairs(redis.call('SMEMBERS', prefix .. 'task-resv:' .. task)) do
      if string.sub(k, 1, #stale) == stale then settle(k, task, 0, 0) end
    end
  end
  local best, short, short_t, short_u = answer, nil, '', ''
  local ids = {}
  for i = 1, n do
    local b = a[9 + i]
    local id, lt, lu = b[1], num(b[2]), num(b[3])
    ids[i] = id
    local ckey = prefix .. 'budget:' .. id
    redis.call('HSET', ckey, 'lt', b[2], 'lu', b[3])
    local c = redis.call('HMGET', ckey, 'ut', 'rt', 'uu', 'ru')
    local ut, rt, uu, ru = num(c[1]) or 0, num(c[2]) or 0, num(c[3]) or 0, num(c[4]) or 0
    local fits, room_t, room_u = answer, nil, nil
    if lt then room_t = lt - ut - rt; fits = math.min(fits, room_t - prompt) end
    if lu then
      room_u = lu - uu - ru
      if pout > 0 then
        fits = math.min(fits, math.floor((room_u * 1000000 - prompt * pin) / pout))
      elseif math.ceil(prompt * pin / 1000000) > room_u then
        fits = -1
      end
    end
    if fits < best then best, short, short_t, short_u = fits, id, room_t or '', room_u or '' end
  end
  if best < min_answer then return {best, -1, -1, short, short_t, short_u} end
  local tokens = prompt + best
  local usd = math.ceil((prompt * pin + best * pout) / 1000000)
  for i = 1, n do
    local ckey = prefix .. 'budget:' .. ids[i]
    redis.call('HINCRBY', ckey, 'rt', tokens)
    redis.call('HINCRBY', ckey, 'ru', usd)
  end
  redis.call('HSET', rkey, 'task', task, 'tenant', tenant, 't', tokens, 'u', usd, 'a', best,
             'ids', cjson.encode(ids))
  redis.call('SADD', prefix .. 'task-resv:' .. task, key)
  return {best, tokens, usd}
end
local out = {}
for i, op in ipairs(cjson.decode(ARGV[2])) do
  local ok, answer
  if op[1] == 'r' then
    ok, answer = pcall(reserve, op[2])
  else
    ok, answer = pcall(settle, op[2], op[3], op[4], op[5])
  end
  if ok then out[i] = answer else out[i] = {'!', tostring(answer)} end
end
return out
"""
)


_OPERATION_TIMEOUT_S = 5.0


class RedisBudgetLedger:
    """Budget counters and reservations in Redis, shared by every worker process."""

    def __init__(self, url: str, *, namespace: str = "troupe") -> None:
        # With a socket timeout, redis-py bounds every command's send by asyncio.wait_for,
        # a Task per command: 40% of this client's CPU on the ledger benchmark. Each
        # operation is bounded by one asyncio.timeout instead (at redis-py's default).
        self._redis: Redis = Redis.from_url(url, socket_timeout=None)
        self._prefix = f"{namespace}:"
        # Loaded again by redis-py when the server lost it (restarted, flushed).
        self._script = self._redis.register_script(_BATCH)
        self._batches: Batcher[list[Any], Any] = Batcher(self._send)

    async def _send(self, ops: list[list[Any]]) -> list[Any]:
        answers = await self._script(args=[self._prefix, json.dumps(ops)])
        return [ResponseError(_text(a[1])) if a and a[0] == b"!" else a for a in answers]

    async def reserve(
        self,
        tenant_id: str,
        task_id: str,
        call_key: str,
        *,
        budgets: Sequence[Budget],
        ask: Ask,
        stale_prefix: str | None = None,
    ) -> Grant:
        ordered = sorted(budgets, key=lambda b: b.counter)
        request: list[Any] = [
            call_key,
            task_id,
            tenant_id,
            stale_prefix or "",
            ask.prompt_tokens,
            ask.answer_tokens,
            ask.min_answer_tokens,
            ask.input_price,
            ask.output_price,
        ]
        request += [[b.counter, _blank(b.tokens), _blank(b.micro_usd)] for b in ordered]
        async with asyncio.timeout(_OPERATION_TIMEOUT_S):
            reply = await self._batches.run(["r", request])
        answer, tokens, usd, *short = reply
        if tokens == -1:
            counter, room_tokens, room_usd = (_text(v) for v in short)
            budget = next(b for b in ordered if b.counter == counter)
            raise refusal((budget, int(room_tokens or 0), int(room_usd or 0)), ask)
        return Grant(answer_tokens=int(answer), tokens=int(tokens), micro_usd=int(usd))

    async def settle(
        self, tenant_id: str, task_id: str, call_key: str, *, tokens: int, micro_usd: int
    ) -> list[Settled]:
        async with asyncio.timeout(_OPERATION_TIMEOUT_S):
            rows = await self._batches.run(["s", call_key, task_id, tokens, micro_usd])
        return [
            Settled(_text(r[0]), int(r[1]), int(r[2]), _limit(r[3]), _limit(r[4])) for r in rows
        ]

    async def release(self, tenant_id: str, task_id: str, call_key: str) -> None:
        await self.settle(tenant_id, task_id, call_key, tokens=0, micro_usd=0)

    async def release_all(self, tenant_id: str, task_id: str) -> None:
        """Give back every reservation the task still holds (it has ended)."""
        async with asyncio.timeout(_OPERATION_TIMEOUT_S):
            held = await self._redis.smembers(f"{self._prefix}task-resv:{task_id}")
        for key in held:
            await self.release(tenant_id, task_id, _text(key))

    async def counters(self, ids: Sequence[str]) -> dict[str, Counter]:
        found: dict[str, Counter] = {}
        for counter in ids:
            async with asyncio.timeout(_OPERATION_TIMEOUT_S):
                values = await self._redis.hmget(
                    f"{self._prefix}budget:{counter}", ["lt", "lu", "ut", "rt", "uu", "ru"]
                )
            if all(v is None for v in values):
                continue
            lt, lu, *amounts = values
            found[counter] = Counter(
                counter, _limit(lt), _limit(lu), *(int(a or 0) for a in amounts)
            )
        return found

    async def aclose(self) -> None:
        await self._redis.aclose()


def _blank(value: int | None) -> int | str:
    return "" if value is None else value


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _limit(value: Any) -> int | None:
    text = _text(value) if value is not None else ""
    return int(text) if text else None
