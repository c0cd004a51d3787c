"""Providers end to end: /api/v1/providers, `troupe providers`, a real SDK provider
behind `troupe serve`, and a planted API key that must surface nowhere."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import NO_MEMORY, TroupeProcess, child_env
from tests.fakes import FakeProviderServer, Reply, fake_provider_server
from troupe.client import TroupeClient
from troupe.domain import TaskStatus

pytestmark = pytest.mark.e2e

TROUPE = Path(sys.executable).parent / "troupe"


def test_the_providers_endpoint_shows_breakers_and_tiers(served: TroupeProcess) -> None:
    with TroupeClient(served.url, api_key=served.api_key) as client:
        answer = client.providers()
    assert [(p.name, p.kind, p.breaker, p.healthy) for p in answer.providers] == [
        ("simulation", "simulation", "closed", True)
    ]
    assert set(answer.tiers) == {"small", "medium", "large"}
    assert answer.tiers["large"][0].model == "sim-large"


def test_troupe_providers_prints_them(served: TroupeProcess) -> None:
    done = subprocess.run(
        [str(TROUPE), "providers", "--server", served.url, "--json"],
        capture_output=True,
        text=True,
        env=child_env({"TROUPE_API_KEY": served.api_key}),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["providers"][0]["name"] == "simulation"
    table = subprocess.run(
        [str(TROUPE), "providers", "--server", served.url],
        capture_output=True,
        text=True,
        env=child_env({"TROUPE_API_KEY": served.api_key}),
        timeout=60,
        check=False,
    )
    assert table.returncode == 0, table.stderr
    assert "simulation" in table.stdout
    assert "closed" in table.stdout


@pytest.fixture
def fake_llm() -> Iterator[FakeProviderServer]:
    with fake_provider_server() as server:
        yield server


def _serve_with_fake_openai(data: Path, server: FakeProviderServer, key: str) -> TroupeProcess:
    candidate = [{"provider": "fake", "model": "gpt-4.1-mini"}]
    env = {
        **NO_MEMORY,
        "TROUPE_DATA_DIR": str(data),
        "TROUPE_LLM__PROVIDERS": json.dumps(
            {
                "fake": {
                    "kind": "openai",
                    "base_url": f"{server.base_url}/v1",
                    "api_key_env": "TROUPE_TEST_PLANTED_KEY",
                }
            }
        ),
        "TROUPE_LLM__TIERS": json.dumps(dict.fromkeys(("small", "medium", "large"), candidate)),
        "TROUPE_LLM__PRICING": json.dumps({"gpt-4.1-mini": {"input": 400000, "output": 1600000}}),
        "TROUPE_LLM__RETRY__INITIAL_BACKOFF_MS": "0",
        "TROUPE_LLM__RETRY__MAX_BACKOFF_MS": "0",
        "TROUPE_TASKS__MAX_ATTEMPTS": "1",
        "TROUPE_LOG__LEVEL": "DEBUG",
        "TROUPE_TEST_PLANTED_KEY": key,
    }
    return TroupeProcess("serve", env=env, log=data / "serve.log").start()


def test_a_planted_key_reaches_the_provider_and_nothing_else(
    fake_llm: FakeProviderServer, tmp_path: Path
) -> None:
    key = f"sk-planted-{secrets.token_hex(16)}"
    process = _serve_with_fake_openai(tmp_path, fake_llm, key)
    seen_outputs: list[str] = []
    try:
        with TroupeClient(process.url, api_key=process.api_key) as client:
            fake_llm.script(Reply("openai_chat_stream_text"))
            done = client.wait(client.submit_task("What is 2+2?", strategy="simple").id)
            assert done.status is TaskStatus.COMPLETED
            assert done.result == "2 + 2 is 4."
            assert done.usage.prompt_tokens == 19  # the provider's own count
            assert fake_llm.seen[-1].headers["authorization"] == f"Bearer {key}"
            assert fake_llm.seen[-1].body["stream"] is True  # providers stream by default

            # A server that echoes the key in its error: the task fails, the key stays out.
            echo = {"error": {"message": f"Incorrect API key provided: {key}"}}
            fake_llm.script(Reply(echo, status=401))
            failed = client.wait(client.submit_task("What is 3+3?", strategy="simple").id)
            assert failed.status is TaskStatus.FAILED
            assert failed.error is not None
            assert "provider_auth_failed" in failed.error.code + failed.error.message

            for task in (done, failed):
                seen_outputs.append(client.get_task(task.id).model_dump_json())
                seen_outputs += [e.model_dump_json() for e in client.follow(task.id)]
            seen_outputs.append(client.providers().model_dump_json())
        with httpx.Client(base_url=process.url, trust_env=False) as http:
            scraped = http.get("/metrics").text
            seen_outputs.append(scraped)
            first_token = (
                "troupe_llm_first_token_seconds_count"
                '{model="gpt-4.1-mini-2025-04-14",provider="fake"} 1.0'
            )
            assert first_token in scraped
            seen_outputs.append(http.get("/api/v1/tasks").text)
    finally:
        assert process.stop() == 0, process.output()
    seen_outputs.append(process.output())
    seen_outputs += [p.read_text(errors="replace") for p in tmp_path.glob("*.log")]
    for output in seen_outputs:
        assert key not in output
    assert any("***" in output for output in seen_outputs)  # the echo was scrubbed, not lost


def test_a_missing_key_stops_serve_naming_the_variable(tmp_path: Path) -> None:
    env = child_env(
        {
            "TROUPE_DATA_DIR": str(tmp_path),
            "TROUPE_LLM__PROVIDERS": json.dumps({"openai": {"kind": "openai"}}),
            "TROUPE_LLM__TIERS": json.dumps(
                {
                    t: [{"provider": "openai", "model": "sim-small"}]
                    for t in ("small", "medium", "large")
                }
            ),
        }
    )
    env.pop("OPENAI_API_KEY", None)
    done = subprocess.run(
        [str(TROUPE), "serve"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "OPENAI_API_KEY" in done.stderr
