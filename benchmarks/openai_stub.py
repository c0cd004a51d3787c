"""A minimal OpenAI chat-completions server on loopback, for llm_router.py.

Runs in its own process (so it does not share the benchmark's GIL) and answers every
POST /v1/chat/completions with the same recorded body, as fast as it can.

    .venv/bin/python benchmarks/openai_stub.py PORT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import uvicorn

BODY = (
    Path(__file__).resolve().parent.parent
    / "tests"
    / "fixtures"
    / "providers"
    / "openai_chat_text.json"
).read_bytes()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # drain the request body
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    json.loads(BODY)  # fail early on a broken fixture
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error", access_log=False)
