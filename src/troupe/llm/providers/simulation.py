"""The simulation provider: no key, no network, deterministic answers.

The answer and its token counts are derived from a hash of the request, so the same
request always gets the same response (replays and tests rely on it). Latency and
failure injection are configurable to rehearse slow and flaky providers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re

from troupe.config import SimulationSettings
from troupe.errors import ProviderError
from troupe.llm.base import TextSink
from troupe.llm.messages import ChatRequest, ChatResponse, TokenUsage
from troupe.llm.pricing import estimate_prompt_tokens

_VOCABULARY = [
    "analysis",
    "considers",
    "constraints",
    "options",
    "tradeoffs",
    "evidence",
    "plan",
    "steps",
    "result",
    "context",
    "summary",
    "risks",
    "costs",
    "timeline",
    "priorities",
    "assumptions",
    "answer",
    "detail",
]


# An arithmetic expression inside a sentence: numbers joined by operators.
_ARITHMETIC = re.compile(r"[-(]*\d+(?:\.\d+)?(?:\s*[-+*/%]+\s*[(]*\d+(?:\.\d+)?\)*)+")


class SimulationProvider:
    """Deterministic stand-in for a real LLM; announced loudly when it is the default."""

    def __init__(self, settings: SimulationSettings, *, name: str = "simulation") -> None:
        self.name = name
        self._settings = settings
        self._failures = random.Random(settings.seed)  # noqa: S311 - not security relevant

    async def complete(
        self, request: ChatRequest, *, on_text: TextSink | None = None
    ) -> ChatResponse:
        """The answer at once (the simulation does not stream: ``on_text`` is unused)."""
        if self._settings.latency_ms:
            await asyncio.sleep(self._settings.latency_ms / 1000)
        if self._failures.random() < self._settings.failure_rate:
            raise ProviderError(
                f"{self.name}: simulated provider failure", code="provider_unavailable"
            )
        # Drawn only when asked for, so a seed's failures stay where they were.
        limited = self._settings.rate_limit_rate
        if limited and self._failures.random() < limited:
            raise ProviderError(
                f"{self.name}: simulated rate limit",
                code="provider_rate_limited",
                retry_after_s=0.05,
            )
        digest = hashlib.sha256(request.model_dump_json().encode()).digest()
        question = request.messages[-1].content if request.messages else ""
        if request.response_format is not None and request.response_format.name == "Plan":
            return self._plan(request)
        if request.response_format is not None and request.response_format.name == "ReactStep":
            return self._react_step(request)
        if request.response_format is not None and request.response_format.name == "StrategyChoice":
            return self._strategy_choice(request, question)
        length = 12 + digest[0] % 24
        words = [_VOCABULARY[b % len(_VOCABULARY)] for b in digest[1 : 1 + length]]
        body = " ".join(words)
        content = f"[simulated {request.model}] On “{question[:80]}”: {body}."
        completion_tokens = min(len(content.split()) + 8, request.max_tokens)
        finish = "length" if completion_tokens == request.max_tokens else "stop"
        if finish == "length":
            content = " ".join(content.split()[: max(request.max_tokens - 8, 1)])
        return ChatResponse(
            provider=self.name,
            model=request.model,
            content=content,
            usage=TokenUsage(
                prompt_tokens=estimate_prompt_tokens(request.messages),
                completion_tokens=completion_tokens,
            ),
            finish_reason=finish,
        )

    def _plan(self, request: ChatRequest) -> ChatResponse:
        """A fan-out plan of ``plan_width`` independent agents, as JSON."""
        width = self._settings.plan_width
        nodes = [
            {
                "id": f"agent-{n}",
                "role": f"analyst {n} of {width}",
                "instructions": f"Study aspect {n} of the task and report what you find.",
                "tier": "medium",
                "depends_on": [],
            }
            for n in range(1, width + 1)
        ]
        plan = {"nodes": nodes, "synthesis": "Combine the analysts' findings into one answer."}
        return self._json_response(request, json.dumps(plan))

    def _react_step(self, request: ChatRequest) -> ChatResponse:
        """Compute the first arithmetic expression of the task with the calculator, then
        answer with what it observed; without one, answer at once."""
        question = request.messages[1].content if len(request.messages) > 1 else ""
        observations = [
            m.content.removeprefix("Observation: ")
            for m in request.messages
            if m.role == "user" and m.content.startswith("Observation: ")
        ]
        expression = _ARITHMETIC.search(question)
        step: dict[str, object]
        if expression and not observations:
            step = {
                "thought": "I should compute this exactly rather than guess.",
                "action": {"tool": "calculator", "arguments": {"expression": expression[0]}},
            }
        else:
            found = f" The calculator says {observations[-1]}." if observations else ""
            step = {"thought": "I have what I need.", "answer": f"[simulated]{found}"}
        return self._json_response(request, json.dumps(step))

    def _strategy_choice(self, request: ChatRequest, question: str) -> ChatResponse:
        """A team for questions that join several parts (commas, 'and', 'compare')."""
        parts = question.count(",") + question.lower().count(" and ")
        dag = parts >= 2 or "compare" in question.lower()
        choice = {
            "strategy": "dag" if dag else "simple",
            "reason": "several parts" if dag else "one question",
        }
        return self._json_response(request, json.dumps(choice))

    def _json_response(self, request: ChatRequest, content: str) -> ChatResponse:
        return ChatResponse(
            provider=self.name,
            model=request.model,
            content=content,
            usage=TokenUsage(
                prompt_tokens=estimate_prompt_tokens(request.messages),
                completion_tokens=len(content) // 4,
            ),
        )

    async def aclose(self) -> None:
        return None
