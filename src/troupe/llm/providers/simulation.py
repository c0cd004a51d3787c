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
from typing import Any

from troupe.config import SimulationSettings
from troupe.errors import ProviderError
from troupe.llm.base import TextSink
from troupe.llm.messages import ChatRequest, ChatResponse, TokenUsage, ToolCall
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


# A scripted tool call in a task's text: [[tool_name {"json": "arguments"}]].
_SCRIPTED = re.compile(r"\[\[([A-Za-z0-9_-]+)(?:\s+(\{.*?\}))?\]\]", re.DOTALL)


def scripted_calls(text: str) -> list[tuple[str, dict[str, Any]]]:
    """The tool calls a task scripts for the simulation, in order (bad JSON: none)."""
    calls = []
    for match in _SCRIPTED.finditer(text):
        try:
            arguments = json.loads(match[2]) if match[2] else {}
        except json.JSONDecodeError:
            continue
        if isinstance(arguments, dict):
            calls.append((match[1], arguments))
    return calls


def _in_conversation(prompt: str) -> tuple[str, str | None]:
    """A session task's question, and the last answer of the conversation before it
    (``agents/memory.py`` renders both; None when the prompt has no conversation)."""
    context, marker, question = prompt.rpartition("## The task\n")
    if not marker:
        return prompt, None
    answers = [line for line in context.splitlines() if line.startswith("Assistant: ")]
    return question, answers[-1].removeprefix("Assistant: ") if answers else None


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
        if request.tools or any(m.role == "tool" for m in request.messages):
            return self._tool_step(request)
        if request.response_format is not None and request.response_format.name == "StrategyChoice":
            return self._strategy_choice(request, question)
        length = 12 + digest[0] % 24
        words = [_VOCABULARY[b % len(_VOCABULARY)] for b in digest[1 : 1 + length]]
        body = " ".join(words)
        question, earlier = _in_conversation(question)
        content = f"[simulated {request.model}] On “{question[:80]}”: {body}."
        if earlier:  # a session task: show that the turn before reached the model
            content += f" Earlier you were told: «{earlier[:60]}»."
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
        """A fan-out plan of ``plan_width`` independent agents, as JSON; each may use
        the tools the task scripts."""
        width = self._settings.plan_width
        question = request.messages[-1].content if request.messages else ""
        tools = sorted({name for name, _ in scripted_calls(question)})
        nodes = [
            {
                "id": f"agent-{n}",
                "role": f"analyst {n} of {width}",
                "instructions": f"Study aspect {n} of the task and report what you find.",
                "tier": "medium",
                "tools": tools,
                "depends_on": [],
            }
            for n in range(1, width + 1)
        ]
        plan = {"nodes": nodes, "synthesis": "Combine the analysts' findings into one answer."}
        return self._json_response(request, json.dumps(plan))

    def _tool_step(self, request: ChatRequest) -> ChatResponse:
        """A tool-using agent: the calls the task scripts (``[[tool {json}]]``), else
        the calculator on the task's first arithmetic expression, one per step, with
        ``update_beliefs`` noting the plan at the first; then an answer citing what the
        tools said. Without tools offered (the last step), it answers at once."""
        question = next((m.content for m in request.messages if m.role == "user"), "")
        offered = {t.name for t in request.tools}
        done = sum(1 for m in request.messages if m.role == "assistant" and m.tool_calls)
        script = scripted_calls(question)
        if not script and "calculator" in offered and (found := _ARITHMETIC.search(question)):
            script = [("calculator", {"expression": found[0]})]
        if offered and done < len(script):
            name, arguments = script[done]
            calls = [ToolCall(id=f"call_{done + 1}_1", name=name, arguments=arguments)]
            if done == 0 and "update_beliefs" in offered:
                plan = {"plan": [f"use {tool}" for tool, _ in script] + ["answer"]}
                calls.insert(0, ToolCall(id="call_1_0", name="update_beliefs", arguments=plan))
            return ChatResponse(
                provider=self.name,
                model=request.model,
                content=f"I should use {name} rather than guess.",
                usage=TokenUsage(
                    prompt_tokens=estimate_prompt_tokens(request.messages),
                    completion_tokens=12 + 8 * len(calls),
                ),
                finish_reason="tool_calls",
                tool_calls=tuple(calls),
            )
        observed = [
            m.content for m in request.messages if m.role == "tool" and m.content != "noted"
        ]
        if observed:
            cited = ", ".join(f"[F{n}]" for n in range(1, len(observed) + 1))
            answer = f"[simulated] The tools said: {'; '.join(observed)}. Rests on {cited}."
        else:
            answer = f"[simulated] On “{question[:80]}”: no tool was needed."
        return self._json_response(request, answer)

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
