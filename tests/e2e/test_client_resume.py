"""The client resumes a dropped event stream after the last event it saw: no loss, no
repeat. The drop is real: the transport cuts the server's stream mid-way."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.e2e.processes import TroupeProcess
from troupe.client import AsyncTroupeClient, TroupeClient

pytestmark = pytest.mark.e2e

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def _events_then_cut(buffer: bytes, keep: int) -> tuple[list[bytes], bool]:
    """Split ``buffer`` into whole SSE messages; say whether ``keep`` were reached."""
    pieces, start = [], 0
    for match in _EVENT_END.finditer(buffer):
        pieces.append(buffer[start : match.end()])
        start = match.end()
        if len(pieces) == keep:
            return pieces, True
    return pieces, False


class _CutStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, keep: int) -> None:
        self.inner, self.keep = inner, keep

    def __iter__(self) -> Iterator[bytes]:
        buffer = b""
        for chunk in self.inner:
            buffer += chunk
            pieces, cut = _events_then_cut(buffer, self.keep)
            if cut:
                yield from pieces
                raise httpx.RemoteProtocolError("connection dropped by the test")
        yield buffer

    def close(self) -> None:
        self.inner.close()


class _AsyncCutStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, keep: int) -> None:
        self.inner, self.keep = inner, keep

    async def __aiter__(self) -> AsyncIterator[bytes]:
        buffer = b""
        async for chunk in self.inner:
            buffer += chunk
            pieces, cut = _events_then_cut(buffer, self.keep)
            if cut:
                for piece in pieces:
                    yield piece
                raise httpx.RemoteProtocolError("connection dropped by the test")
        yield buffer

    async def aclose(self) -> None:
        await self.inner.aclose()


class DropFirstStream(httpx.BaseTransport):
    """Cuts the first event stream after ``keep`` whole SSE messages."""

    def __init__(self, keep: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.keep = keep
        self.resumed_from: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path.endswith("/events"):
            self.resumed_from.append(request.headers.get("last-event-id"))
            if len(self.resumed_from) == 1:
                assert isinstance(response.stream, httpx.SyncByteStream)
                response.stream = _CutStream(response.stream, self.keep)
        return response


class AsyncDropFirstStream(httpx.AsyncBaseTransport):
    def __init__(self, keep: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.keep = keep
        self.resumed_from: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/events"):
            self.resumed_from.append(request.headers.get("last-event-id"))
            if len(self.resumed_from) == 1:
                assert isinstance(response.stream, httpx.AsyncByteStream)
                response.stream = _AsyncCutStream(response.stream, self.keep)
        return response


def test_sync_client_resumes_after_a_drop(served: TroupeProcess) -> None:
    with TroupeClient(served.url, api_key=served.api_key) as plain:
        task_id = plain.wait(plain.submit_task("drop me").id).id
    transport = DropFirstStream(keep=2)
    with TroupeClient(served.url, api_key=served.api_key, transport=transport) as client:
        seqs = [e.seq for e in client.follow(task_id)]
    assert seqs == [1, 2, 3, 4]
    assert transport.resumed_from == ["0", "2"]


async def test_async_client_resumes_after_a_drop(served: TroupeProcess) -> None:
    async with AsyncTroupeClient(served.url, api_key=served.api_key) as plain:
        task_id = (await plain.wait((await plain.submit_task("drop me too")).id)).id
    transport = AsyncDropFirstStream(keep=3)
    async with AsyncTroupeClient(served.url, api_key=served.api_key, transport=transport) as client:
        seqs = [e.seq async for e in client.follow(task_id)]
    assert seqs == [1, 2, 3, 4]
    assert transport.resumed_from == ["0", "3"]


class _DropFirstPoll(httpx.BaseTransport):
    """Drops the first long poll of a task's state before it answers."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.polls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if "wait_s" in request.url.params:
            self.polls += 1
            if self.polls == 1:
                raise httpx.RemoteProtocolError("connection dropped by the test")
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class _AsyncDropFirstPoll(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.polls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "wait_s" in request.url.params:
            self.polls += 1
            if self.polls == 1:
                raise httpx.RemoteProtocolError("connection dropped by the test")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_sync_wait_polls_again_after_a_drop(served: TroupeProcess) -> None:
    transport = _DropFirstPoll()
    with TroupeClient(served.url, api_key=served.api_key, transport=transport) as client:
        ended = client.wait(client.submit_task("wait through a drop").id)
    assert ended.status == "completed"
    assert transport.polls >= 2


async def test_async_wait_polls_again_after_a_drop(served: TroupeProcess) -> None:
    transport = _AsyncDropFirstPoll()
    async with AsyncTroupeClient(served.url, api_key=served.api_key, transport=transport) as client:
        ended = await client.wait((await client.submit_task("wait through a drop too")).id)
    assert ended.status == "completed"
    assert transport.polls >= 2
