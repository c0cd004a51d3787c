"""The react strategy on the real Temporal dev server: reason → act → observe."""

from __future__ import annotations

import json

import pytest

from tests.integration.orchestrator.rig import RigFactory
from troupe.config import SimulationSettings
from troupe.domain import EventType, Strategy, TaskStatus
from troupe.llm.messages import ChatRequest
from troupe.llm.providers.simulation import SimulationProvider
from troupe.testing import FunctionProvider

pytestmark = pytest.mark.integration


def _step(**fields: object) -> str:
    return json.dumps(fields)


async def test_the_agent_uses_a_tool_and_answers_with_what_it_observed(rig: RigFactory) -> None:
    seen: list[ChatRequest] = []

    async def respond(request: ChatRequest) -> str:
        seen.append(request)
        if len(seen) == 1:
            action = {"tool": "calculator", "arguments": {"expression": "17 * 23 + 4"}}
            return _step(thought="compute it", action=action)
        return _step(thought="done", answer=f"It is {request.messages[-1].content[13:]}.")

    async with rig(FunctionProvider(respond)) as r:
        task = await r.until_ended((await r.submit("What is 17*23+4?", strategy=Strategy.REACT)).id)
        assert task.status is TaskStatus.COMPLETED
        assert task.result == "It is 395."
        assert seen[1].messages[-1].content == "Observation: 395"
        events = await r.events(task.id)
        (step,) = [e for e in events if e.type is EventType.REACT_STEP]
        assert step.data["tool"] == "calculator"
        assert step.data["observation"] == "395"
        assert [e.type for e in events].count(EventType.LLM_CALL) == 2


async def test_a_bad_tool_call_is_an_observation_not_a_crash(rig: RigFactory) -> None:
    seen: list[ChatRequest] = []

    async def respond(request: ChatRequest) -> str:
        seen.append(request)
        if len(seen) == 1:
            return _step(thought="try", action={"tool": "shell", "arguments": {"cmd": "ls"}})
        if len(seen) == 2:
            action = {"tool": "calculator", "arguments": {"expression": "import os"}}
            return _step(thought="again", action=action)
        return _step(answer="gave up on tools")

    async with rig(FunctionProvider(respond)) as r:
        task = await r.until_ended((await r.submit("x", strategy=Strategy.REACT)).id)
        assert task.status is TaskStatus.COMPLETED
        assert "not available" in seen[1].messages[-1].content
        assert "not an arithmetic expression" in seen[2].messages[-1].content


async def test_the_last_allowed_step_must_answer(rig: RigFactory) -> None:
    seen: list[ChatRequest] = []

    async def respond(request: ChatRequest) -> str:
        seen.append(request)
        action = {"tool": "calculator", "arguments": {"expression": "1 + 1"}}
        return _step(thought="more", action=action, answer="best guess so far")

    async with rig(FunctionProvider(respond), orchestrator={"react_max_steps": 3}) as r:
        task = await r.until_ended((await r.submit("loop", strategy=Strategy.REACT)).id)
        assert task.status is TaskStatus.COMPLETED
        assert task.result == "best guess so far"
        assert len(seen) == 3
        assert "last step" in seen[-1].messages[0].content


async def test_the_simulation_plays_a_tool_using_agent(rig: RigFactory) -> None:
    async with rig(SimulationProvider(SimulationSettings())) as r:
        task = await r.until_ended(
            (await r.submit("How much is 12 * (3 + 4)?", strategy=Strategy.REACT)).id
        )
        assert task.status is TaskStatus.COMPLETED
        assert task.result is not None
        assert "84" in task.result


async def test_the_agent_runs_python_in_the_sandbox(
    rig: RigFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    seen: list[ChatRequest] = []

    async def respond(request: ChatRequest) -> str:
        seen.append(request)
        if len(seen) == 1:
            code = "import math\nprint(math.factorial(20))"
            return _step(
                thought="compute it", action={"tool": "python_exec", "arguments": {"code": code}}
            )
        return _step(thought="done", answer="20! is 2432902008176640000.")

    cache = tmp_path_factory.getbasetemp() / "sandbox-cache"  # shared with the sandbox tests
    async with rig(
        FunctionProvider(respond),
        orchestrator={"react_tools": ["calculator", "python_exec"]},
        sandbox={"cache_dir": str(cache)},
    ) as r:
        task = await r.until_ended((await r.submit("What is 20!?", strategy=Strategy.REACT)).id)
        assert task.status is TaskStatus.COMPLETED, task.error
        observation = seen[1].messages[-1].content
        assert observation == "Observation: exit code 0\nstdout:\n2432902008176640000\n"
        (step,) = [e for e in await r.events(task.id) if e.type is EventType.REACT_STEP]
        assert step.data["tool"] == "python_exec"
