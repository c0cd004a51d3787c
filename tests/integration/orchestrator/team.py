"""A scripted team for orchestrator tests: planner, node agents and synthesis answered
by one function that also measures how many nodes run at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from troupe.agents.runtime import SIMPLE_PROMPT
from troupe.llm.messages import ChatRequest
from troupe.testing import FunctionProvider


def plan_json(*nodes: tuple[str, list[str]]) -> str:
    return json.dumps(
        {
            "nodes": [
                {"id": i, "role": f"role {i}", "instructions": f"do {i}", "depends_on": deps}
                for i, deps in nodes
            ],
            "synthesis": "merge everything",
        }
    )


def _kind(request: ChatRequest) -> str:
    if request.response_format is not None:
        return "planner"
    system = request.messages[0].content
    if system.startswith("You combine"):
        return "synthesis"
    if system == SIMPLE_PROMPT:
        return "simple"
    return system.split(",")[0].removeprefix("You are role ")  # the node's id


@dataclass
class Team:
    """Answers planner, node and synthesis calls; counts how many nodes run at once."""

    plans: list[str]
    node_seconds: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)  # per-node overrides
    fail: dict[str, Exception] = field(default_factory=dict)
    gate: asyncio.Event | None = None
    running: int = 0
    peak: int = 0
    cancelled: int = 0
    simple: int = 0
    node_requests: dict[str, ChatRequest] = field(default_factory=dict)
    synthesis: list[ChatRequest] = field(default_factory=list)

    async def __call__(self, request: ChatRequest) -> str:
        kind = _kind(request)
        if kind == "planner":
            return self.plans.pop(0) if len(self.plans) > 1 else self.plans[0]
        if kind == "synthesis":
            self.synthesis.append(request)
            return "the final answer"
        if kind == "simple":
            self.simple += 1
            return "one agent's answer"
        self.node_requests[kind] = request
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(self.seconds.get(kind, self.node_seconds))
            if kind in self.fail:
                raise self.fail[kind]
            return f"output of {kind}"
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1


def team_provider(team: Callable[[ChatRequest], Awaitable[str]]) -> FunctionProvider:
    return FunctionProvider(team)
