"""The ledger's group commit: what waits meanwhile goes out as one batch, each caller
gets its own answer, and a batch that fails as a whole is retried one by one."""

from __future__ import annotations

import asyncio

import pytest

from troupe.storage.batching import Batcher

pytestmark = pytest.mark.unit


class Recorder:
    """A ``send`` that doubles numbers, refuses odd ones alone, and can be made to fail
    whole batches or to wait for a gate."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.fail_batches_over = 0  # fail every batch larger than this (0: never)
        self.gate: asyncio.Event | None = None

    async def send(self, ops: list[int]) -> list[int | Exception]:
        self.batches.append(list(ops))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_batches_over and len(ops) > self.fail_batches_over:
            raise ConnectionError("the batch was lost")
        return [ValueError(f"odd {n}") if n % 2 else n * 2 for n in ops]


async def test_calls_of_one_turn_go_out_together_and_get_their_own_answers() -> None:
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(recorder.send)
    answers = await asyncio.gather(*(batcher.run(n) for n in range(6)), return_exceptions=True)
    assert recorder.batches == [[0, 1, 2, 3, 4, 5]]
    assert [a if isinstance(a, int) else str(a) for a in answers] == [
        0,
        "odd 1",
        4,
        "odd 3",
        8,
        "odd 5",
    ]


async def test_what_arrives_while_a_batch_is_out_is_the_next_batch() -> None:
    recorder = Recorder()
    recorder.gate = asyncio.Event()
    batcher: Batcher[int, int] = Batcher(recorder.send, max_batch=3)
    first = asyncio.ensure_future(batcher.run(0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(batcher.run(n)) for n in (2, 4, 6, 8)]
    await asyncio.sleep(0.01)
    assert recorder.batches == [[0]]  # one batch on its way at a time
    recorder.gate.set()
    assert await asyncio.gather(first, *later) == [0, 4, 8, 12, 16]
    assert recorder.batches == [[0], [2, 4, 6], [8]]  # at most max_batch each


async def test_a_batch_that_fails_whole_is_sent_again_one_by_one() -> None:
    recorder = Recorder()
    recorder.fail_batches_over = 1
    batcher: Batcher[int, int] = Batcher(recorder.send)
    answers = await asyncio.gather(*(batcher.run(n) for n in (2, 3, 4)), return_exceptions=True)
    assert recorder.batches == [[2, 3, 4], [2], [3], [4]]
    assert (answers[0], answers[2]) == (4, 8)
    assert isinstance(answers[1], ValueError)  # only the one that fails alone fails


async def test_a_lone_batch_that_fails_fails_its_caller() -> None:
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(lambda ops: _fail(recorder, ops))
    with pytest.raises(ConnectionError):
        await batcher.run(2)
    assert recorder.batches == [[2]]


async def _fail(recorder: Recorder, ops: list[int]) -> list[int | Exception]:
    recorder.batches.append(list(ops))
    raise ConnectionError("down")


async def test_a_caller_that_gave_up_before_its_batch_left_is_not_sent() -> None:
    recorder = Recorder()
    recorder.gate = asyncio.Event()
    batcher: Batcher[int, int] = Batcher(recorder.send)
    first = asyncio.ensure_future(batcher.run(0))
    await asyncio.sleep(0.01)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await batcher.run(2)  # waits behind the first batch, then gives up
    kept = asyncio.ensure_future(batcher.run(4))
    recorder.gate.set()
    assert list(await asyncio.gather(first, kept)) == [0, 8]
    assert recorder.batches == [[0], [4]]
