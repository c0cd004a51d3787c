"""The calculator evaluates arithmetic exactly and refuses everything else."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from troupe.agents.metering import MeteredLLM
from troupe.agents.react import ToolAgent
from troupe.config import LLMSettings, OrchestratorSettings, SimulationSettings
from troupe.errors import ConfigError
from troupe.llm.providers.simulation import SimulationProvider
from troupe.testing import UnlimitedLedger, routed
from troupe.tools.base import ToolError, ToolOutput, ToolRegistry
from troupe.tools.calculator import Calculator, evaluate

pytestmark = pytest.mark.unit


@st.composite
def expressions(draw: st.DrawFn, depth: int = 3) -> str:
    if depth == 0 or draw(st.booleans()):
        return str(draw(st.integers(-1000, 1000)))
    left = draw(expressions(depth - 1))
    right = draw(expressions(depth - 1))
    op = draw(st.sampled_from(["+", "-", "*"]))
    return f"({left} {op} {right})"


@given(expressions())
def test_integer_arithmetic_matches_python(expression: str) -> None:
    assert evaluate(expression) == Fraction(eval(expression))  # generated, trusted input


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("17 * 23 + 4", Fraction(395)),
        ("1/3 + 1/6", Fraction(1, 2)),
        ("2 ** 10", Fraction(1024)),
        ("7 // 2", Fraction(3)),
        ("-(3 - 5) % 3", Fraction(2)),
        ("0.5 * 4", Fraction(2)),
    ],
)
def test_known_values(expression: str, value: Fraction) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os').system('id')", "only numbers"),
        ("x + 1", "only numbers"),
        ("(1).__class__", "only numbers"),
        ("1 / 0", "division by zero"),
        ("2 ** 100000", "exponents are limited"),
        ("9 ** 999 ** 2", "exponents are limited"),
        ("1 +", "not an arithmetic expression"),
        ("1 << 5", "not allowed"),
        ("2 ** 0.5", "whole-number exponents"),
    ],
)
def test_anything_but_arithmetic_is_refused(expression: str, reason: str) -> None:
    with pytest.raises(ToolError, match=reason):
        evaluate(expression)


async def test_the_registry_validates_arguments_and_bounds_results() -> None:
    registry = ToolRegistry([Calculator()], max_result_chars=10)
    answer = await registry.call("calculator", {"expression": "6 * 7"})
    assert (answer.text, answer.ok, answer.confidence) == ("42", True, 1.0)
    assert answer.seconds > 0
    assert (await registry.call("calculator", {"expression": "10 ** 40"})).text.endswith("… [cut]")
    registry = ToolRegistry([Calculator()])
    refused = await registry.call("calculator", {"expr": "1"})
    assert not refused.ok
    assert refused.text.startswith(
        "error: bad arguments for calculator: expression: Field required"
    )
    unknown = await registry.call("shell", {"cmd": "ls"})
    assert (unknown.ok, unknown.text) == (False, "error: no tool named 'shell'")
    (described,) = registry.describe()
    assert described["name"] == "calculator"
    assert "expression" in described["parameters"]["properties"]


class _Slow(Calculator):
    name = "slow"

    async def run(self, arguments: BaseModel) -> ToolOutput:
        await asyncio.sleep(5)
        raise AssertionError("the registry's time limit stops it first")


async def test_a_tool_that_outlives_its_time_limit_is_an_error_output() -> None:
    registry = ToolRegistry([_Slow()], timeout_s=0.05)
    output = await registry.call("slow", {"expression": "1"})
    assert not output.ok
    assert "took longer than 0.05s" in output.text
    assert output.seconds < 1


def test_two_tools_may_not_share_a_name() -> None:
    with pytest.raises(ValueError, match="two tools are named 'calculator'"):
        ToolRegistry([Calculator(), Calculator()])


def test_react_tools_must_exist_in_the_registry() -> None:

    llm = MeteredLLM(
        routed(SimulationProvider(SimulationSettings())), LLMSettings(), UnlimitedLedger()
    )
    with pytest.raises(ConfigError, match="unknown tools \\['web', 'wiki__\\*'\\]"):
        ToolAgent(
            llm,
            journal=None,  # type: ignore[arg-type]  # never reached: construction fails first
            tools=ToolRegistry([Calculator()]),
            llm_settings=LLMSettings(),
            orchestrator=OrchestratorSettings(react_tools=("calculator", "web", "wiki__*")),
        )
