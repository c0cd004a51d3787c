"""The react strategy on the real Temporal dev server: an LLM with native tool calling,
the tools it calls, every step metered, and the agent's BeliefState."""

from __future__ import annotations

import pytest

from tests.integration.orchestrator.rig import TENANT, RigFactory
from troupe.config import SimulationSettings
from troupe.domain import EventType, Strategy, TaskStatus
from troupe.llm.messages import ChatRequest, ChatResponse, TokenUsage, ToolCall
from troupe.llm.providers.simulation import SimulationProvider
from troupe.testing import FunctionProvider

pytestmark = pytest.mark.integration


def _calls(*calls: tuple[str, dict[str, object]], thought: str = "") -> ChatResponse:
    """The model asks for these tool calls."""
    return ChatResponse(
        provider="function",
        model="sim-small",
        content=thought,
        usage=TokenUsage(prompt_tokens=50, completion_tokens=7),
        finish_reason="tool_calls",
        tool_calls=tuple(
            ToolCall(id=f"c{n}-{name}", name=name, arguments=arguments)
            for n, (name, arguments) in enumerate(calls)
        ),
    )


async def test_the_agent_uses_a_tool_and_answers_with_what_it_observed(rig: RigFactory) -> None:
    seen: list[ChatRequest] = []

    async def respond(request: ChatRequest) -> ChatResponse | str:
        seen.append(request)
        if len(seen) == 1:
            return _calls(("calculator", {"expression": "17 * 23 + 4"}), thought="compute it")
        return f"It is {request.messages[-1].content}. [F1]"

    async with rig(FunctionProvider(respond)) as r:
        task = await r.until_ended((await r.submit("What is 17*23+4?", strategy=Strategy.REACT)).id)
        assert task.status is TaskStatus.COMPLETED
        assert task.result == "It is 395. [F1]"
        # The tools went to the model as native tool specs, the result as a tool turn.
        assert {t.name for t in seen[0].tools} == {"calculator", "update_beliefs"}
        asked, answered = seen[1].messages[-2:]
        assert asked.role == "assistant"
        assert asked.tool_calls[0].name == "calculator"
        assert (answered.role, answered.tool_call_id, answered.content) == (
            "tool",
            "c0-calculator",
            "395",
        )
        # The second step's prompt carries what the first established, for citing.
        assert "[F1] (1.0, step 1: calculator)" in seen[1].messages[0].content
        events = await r.events(task.id)
        step_events = [e.data for e in events if e.type is EventType.REACT_STEP]
        assert [s["step"] for s in step_events] == [1, 2]
        (call,) = step_events[0]["calls"]
        assert (call["tool"], call["observation"], call["ok"]) == ("calculator", "395", True)
        assert call["seconds"] > 0
        assert step_events[0]["prompt_tokens"] == 50
        assert step_events[0]["completion_tokens"] == 7
        assert step_events[1]["answered"] is True
        assert [e.type for e in events].count(EventType.LLM_CALL) == 2
        steps = await r.steps(task.id)
        assert [s.step for s in steps] == [1, 2]
        (fact,) = steps[-1].beliefs.facts
        assert fact.content.endswith("→ 395")
        assert (fact.source, fact.step, fact.confidence) == ("step 1: calculator", 1, 1.0)
        assert sum(s.usage.total_tokens for s in steps) == task.usage.total_tokens


async def test_a_bad_tool_call_is_an_observation_not_a_crash(rig: RigFactory) -> None:
    seen: list[ChatRequest] = []

    async def respond(request: ChatRequest) -> ChatResponse | str:
        seen.append(request)
        if len(seen) == 1:
            return _calls(("shell", {"cmd": "ls"}))
        if len(seen) == 2:
            return _calls(("calculator", {"expression": "import os"}))
        return "gave up on tools"

    async with rig(FunctionProvider(respond)) as r:
        task = await r.until_ended((await r.submit("x", strategy=Strategy.REACT)).id)
        assert task.status is TaskStatus.COMPLETED
        assert "not available" in seen[1].messages[-1].content
        assert "not an arithmetic expression" in seen[2].messages[-1].content
        steps = await r.steps(task.id)
        assert [c.ok for s in steps for c in s.calls] == [False, False]
        assert steps[-1].beliefs.facts == ()  # failures are not facts


async def test_the_last_allowed_step_must_answer(rig: RigFactory) -> None:
    seen: list[ChatRequest] = []

    async def respond(request: ChatRequest) -> ChatResponse | str:
        seen.append(request)
        if request.tools:
            return _calls(("calculator", {"expression": "1 + 1"}))
        return "best guess so far"

    async with rig(FunctionProvider(respond), orchestrator={"react_max_steps": 3}) as r:
        task = await r.until_ended((await r.submit("loop", strategy=Strategy.REACT)).id)
        assert task.status is TaskStatus.COMPLETED
        assert task.result == "best guess so far"
        assert len(seen) == 3
        assert seen[-1].tools == ()
        assert "last step" in seen[-1].messages[0].content
        assert [s.step for s in await r.steps(task.id)] == [1, 2, 3]


async def test_belief_state_follows_the_agents_updates_and_observations(rig: RigFactory) -> None:
    seen: list[ChatRequest] = []

    async def respond(request: ChatRequest) -> ChatResponse | str:
        seen.append(request)
        if len(seen) == 1:
            update = {
                "plan": ["find the area", "answer"],
                "open_questions": ["what is the side?", "which unit?"],
                "facts": [{"content": "a square's area is side squared", "confidence": 0.95}],
            }
            return _calls(
                ("update_beliefs", update),
                ("calculator", {"expression": "12 ** 2"}),
                thought="two things at once",
            )
        if len(seen) == 2:
            return _calls(
                ("update_beliefs", {"resolved": ["what is the side?"], "plan": ["answer"]})
            )
        return "144 square metres [F1][F2]"

    async with rig(FunctionProvider(respond)) as r:
        task = await r.until_ended((await r.submit("area?", strategy=Strategy.REACT)).id)
        assert task.status is TaskStatus.COMPLETED
        first, second, answer = await r.steps(task.id)
        assert first.thought == "two things at once"
        assert [c.tool for c in first.calls] == ["update_beliefs", "calculator"]
        assert first.beliefs.plan == ("find the area", "answer")
        assert [(f.content, f.confidence, f.source) for f in first.beliefs.facts] == [
            ("a square's area is side squared", 0.95, "step 1: the agent's reasoning"),
            ('calculator({"expression": "12 ** 2"}) → 144', 1.0, "step 1: calculator"),
        ]
        assert first.beliefs.open_questions == ("what is the side?", "which unit?")
        assert second.beliefs.open_questions == ("which unit?",)
        assert second.beliefs.plan == ("answer",)
        assert answer.answer == "144 square metres [F1][F2]"
        assert answer.beliefs == second.beliefs
        # Both calls of step 1 went back as one assistant turn and two tool turns.
        roles = [m.role for m in seen[1].messages]
        assert roles == ["system", "user", "assistant", "tool", "tool"]
        assert "Open questions: what is the side?; which unit?" in seen[1].messages[0].content


async def test_the_simulation_plays_a_tool_using_agent(rig: RigFactory) -> None:
    async with rig(SimulationProvider(SimulationSettings())) as r:
        task = await r.until_ended(
            (await r.submit("How much is 12 * (3 + 4)?", strategy=Strategy.REACT)).id
        )
        assert task.status is TaskStatus.COMPLETED
        assert task.result is not None
        assert "84" in task.result
        first, _ = await r.steps(task.id)
        assert first.beliefs.plan == ("use calculator", "answer")


async def test_the_simulation_follows_a_scripted_multi_step_run(rig: RigFactory) -> None:
    query = (
        'First [[calculator {"expression": "2 ** 10"}]] then [[calculator {"expression": "3 * 5"}]]'
    )
    async with rig(SimulationProvider(SimulationSettings())) as r:
        task = await r.until_ended((await r.submit(query, strategy=Strategy.REACT)).id)
        assert task.status is TaskStatus.COMPLETED
        assert task.result == "[simulated] The tools said: 1024; 15. Rests on [F1], [F2]."
        steps = await r.steps(task.id)
        assert [[c.tool for c in s.calls] for s in steps] == [
            ["update_beliefs", "calculator"],
            ["calculator"],
            [],
        ]


async def test_the_agent_runs_python_in_the_sandbox(
    rig: RigFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    seen: list[ChatRequest] = []

    async def respond(request: ChatRequest) -> ChatResponse | str:
        seen.append(request)
        if len(seen) == 1:
            code = "import math\nprint(math.factorial(20))"
            return _calls(("python_exec", {"code": code}))
        return "20! is 2432902008176640000."

    cache = tmp_path_factory.getbasetemp() / "sandbox-cache"  # shared with the sandbox tests
    async with rig(
        FunctionProvider(respond),
        orchestrator={"react_tools": ["calculator", "python_exec"]},
        sandbox={"cache_dir": str(cache)},
    ) as r:
        task = await r.until_ended((await r.submit("What is 20!?", strategy=Strategy.REACT)).id)
        assert task.status is TaskStatus.COMPLETED, task.error
        observation = seen[1].messages[-1].content
        assert observation == "exit code 0\nstdout:\n2432902008176640000\n"
        first = (await r.steps(task.id))[0]
        (call,) = first.calls
        assert call.tool == "python_exec"
        assert call.fuel is not None
        assert call.fuel > 0
        assert first.fuel == call.fuel
        assert first.tool_seconds >= call.seconds > 0


async def test_plan_nodes_given_tools_run_the_tool_loop(rig: RigFactory) -> None:
    query = 'Compare the options, and check [[calculator {"expression": "6 * 7"}]]'
    async with rig(SimulationProvider(SimulationSettings(plan_width=2))) as r:
        task = await r.until_ended((await r.submit(query, strategy=Strategy.DAG)).id)
        assert task.status is TaskStatus.COMPLETED, task.error
        assert task.plan is not None
        assert [n.tools for n in task.plan.nodes] == [("calculator",), ("calculator",)]
        steps = await r.steps(task.id)
        for node in ("agent-1", "agent-2"):
            mine = [s for s in steps if s.node_id == node]
            assert [[c.tool for c in s.calls] for s in mine] == [
                ["update_beliefs", "calculator"],
                [],
            ]
            assert mine[-1].answer == "[simulated] The tools said: 42. Rests on [F1]."
        # What each node's answer rests on travels with its output to the synthesis.
        nodes = await r.store.task_nodes(TENANT, task.id)
        for node_run in nodes:
            assert node_run.output is not None
            assert '[F1] (1.0, step 1: calculator) calculator({"expression": "6 * 7"}) → 42' in (
                node_run.output
            )
        # Every call of every step is metered once, and the steps account for the nodes'.
        step_tokens = sum(s.usage.total_tokens for s in steps)
        usage = await r.store.usage_calls(TENANT, task.id)
        node_tokens = sum(c.usage.total_tokens for c in usage if c.node_id is not None)
        assert step_tokens == node_tokens
