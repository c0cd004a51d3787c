"""A minimal OpenAI chat-completions server on loopback, for llm_router.py.

Runs in its own process (so it does not share the benchmark's GIL) and answers every
POST /v1/chat/completions with the same recorded body (or, for ``"stream": true``, the
same recorded stream of chunks), as fast as it can.

    .venv/bin/python benchmarks/openai_stub.py PORT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import uvicorn

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "providers"
BODY = (FIXTURES / "openai_chat_text.json").read_bytes()
STREAM = (
    "".join(
        f"data: {json.dumps(chunk)}\n\n"
        for chunk in json.loads((FIXTURES / "openai_chat_stream_text.json").read_text())
    )
    + "data: [DONE]\n\n"
).encode()


def _headers(kind: bytes, body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", kind), (b"content-length", str(len(body)).encode())]


HEADERS = _headers(b"application/json", BODY)
STREAM_HEADERS = _headers(b"text/event-stream", STREAM)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    request = b""
    more = True
    while more:
        message = await receive()
        request += message.get("body", b"")
        more = message.get("more_body", False)
    streamed = b'"stream":true' in request.replace(b" ", b"")
    body, headers = (STREAM, STREAM_HEADERS) if streamed else (BODY, HEADERS)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    json.loads(BODY)  # fail early on a broken fixture
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error", access_log=False)
