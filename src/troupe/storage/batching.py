"""Group commit for the budget ledger: concurrent operations of one process, sent together.

Two ledger operations per LLM call, from every agent at once, all on the same few hot
budget counters: on PostgreSQL each one is a transaction that holds those counters'
row locks until its commit is flushed to disk, so one at a time commit, whatever the
number of clients; on Redis each one is a command the client pays for. A ``Batcher``
sends what this process's callers ask for while a batch is on its way as the next
batch, in one round trip (one transaction, one script): the cost of a flush or a
command is shared by everyone waiting, and a lone call is sent at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

_Op = TypeVar("_Op")
_R = TypeVar("_R")

# Each answer of a batch is its operation's result or the exception to raise for it
# (a refusal is one operation's answer, not the batch's failure).
Send = Callable[[list[_Op]], Awaitable[Sequence[_R | Exception]]]


class Batcher(Generic[_Op, _R]):
    """Runs operations through ``send`` in batches of at most ``max_batch``, one batch
    on its way at a time.

    A batch that fails as a whole (a dropped connection, a deadlock the database broke)
    is sent again one operation at a time, so that only an operation that fails alone
    fails its caller. ``send`` must therefore apply a batch all or nothing. A caller
    that stops waiting (cancelled, timed out) before its batch leaves is left out of it;
    once sent, its operation takes effect like any other.
    """

    def __init__(self, send: Send[_Op, _R], *, max_batch: int = 64):
        self._send = send
        self._max_batch = max_batch
        self._waiting: list[tuple[_Op, asyncio.Future[_R]]] = []
        self._in_flight: asyncio.Task[None] | None = None
        self._scheduled = False

    async def run(self, op: _Op) -> _R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_R] = loop.create_future()
        self._waiting.append((op, future))
        if not self._scheduled and self._in_flight is None:
            # Sent at the end of this event-loop turn, with whatever else it brings.
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return await future

    def _dispatch(self) -> None:
        self._scheduled = False
        self._waiting = [(op, f) for op, f in self._waiting if not f.done()]
        batch = self._waiting[: self._max_batch]
        del self._waiting[: self._max_batch]
        if batch:
            self._in_flight = asyncio.create_task(self._deliver(batch))
            self._in_flight.add_done_callback(self._sent)

    def _sent(self, _: asyncio.Task[None]) -> None:
        self._in_flight = None
        if self._waiting and not self._scheduled:
            self._dispatch()

    async def _deliver(self, batch: list[tuple[_Op, asyncio.Future[_R]]]) -> None:
        try:
            answers = await self._send([op for op, _ in batch])
        except Exception as exc:
            # Alone, only what fails by itself fails its caller.
            answers = [exc] if len(batch) == 1 else [await self._alone(op) for op, _ in batch]
        except BaseException:  # cancelled: the loop is going away
            for _, future in batch:
                if not future.done():
                    future.cancel()
            raise
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():  # its caller gave up
                continue
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    async def _alone(self, op: _Op) -> _R | Exception:
        try:
            return (await self._send([op]))[0]
        except Exception as exc:
            return exc
