"""A fake model provider on loopback that speaks OpenAI's and Anthropic's wire protocols.

It answers from the recorded bodies in ``tests/fixtures/providers/``, scripted per test,
and records every request it gets, so a test can check what the official SDK sent.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from troupe.orchestrator.devserver import free_port

FIXTURES = Path(__file__).parent / "fixtures" / "providers"


def fixture(name: str) -> Any:
    """A recorded body: an object, or for a stream the list of its chunks / events."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _sse(path: str, chunks: list[Any]) -> str:
    """OpenAI streams ``data:`` lines ending with ``[DONE]``; Anthropic names each event."""
    if path.endswith("/messages"):
        return "".join(f"event: {c['event']}\ndata: {json.dumps(c['data'])}\n\n" for c in chunks)
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a status and a JSON body (a fixture's name or a dict); a
    fixture holding a list is sent as a stream of Server-Sent Events."""

    body: str | dict[str, Any]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class _LoopbackApp:
    """A FastAPI app served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, app: FastAPI, what: str) -> None:
        self.port = free_port()
        self._what = what
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {self._what} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


class FakeProviderServer:
    """Serves ``/v1/chat/completions`` and ``/v1/embeddings`` (OpenAI) and ``/v1/messages``
    (Anthropic).

    Replies are taken from the script in order; the last one repeats.
    """

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._script: deque[Reply] = deque()
        app = FastAPI()
        app.add_api_route("/v1/chat/completions", self._answer, methods=["POST"])
        app.add_api_route("/v1/messages", self._answer, methods=["POST"])
        app.add_api_route("/v1/embeddings", self._answer, methods=["POST"])
        self._served = _LoopbackApp(app, "fake provider server")
        self.port = self._served.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        self._script = deque(replies)

    async def _answer(self, request: Request) -> Response:
        self.seen.append(
            Seen(request.url.path, dict(request.headers), json.loads(await request.body()))
        )
        reply = self._script.popleft() if len(self._script) > 1 else self._script[0]
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        body = fixture(reply.body) if isinstance(reply.body, str) else reply.body
        if isinstance(body, list):  # a recorded stream: Server-Sent Events
            return Response(_sse(request.url.path, body), media_type="text/event-stream")
        return JSONResponse(body, status_code=reply.status, headers=reply.headers)

    def start(self) -> None:
        self._served.start()

    def stop(self) -> None:
        self._served.stop()


@contextmanager
def fake_provider_server() -> Iterator[FakeProviderServer]:
    server = FakeProviderServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class FakeCollector:
    """An OpenTelemetry collector on loopback: keeps the body of every OTLP/HTTP export
    (``POST /v1/traces``, protobuf)."""

    def __init__(self) -> None:
        self.exports: list[bytes] = []
        app = FastAPI()
        app.add_api_route("/v1/traces", self._export, methods=["POST"])
        self._served = _LoopbackApp(app, "fake collector")
        self.port = self._served.port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    async def _export(self, request: Request) -> Response:
        self.exports.append(await request.body())
        return Response(b"", media_type="application/x-protobuf")

    def __enter__(self) -> FakeCollector:
        self._served.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._served.stop()
