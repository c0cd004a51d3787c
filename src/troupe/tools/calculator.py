"""calculator: exact arithmetic on an expression, without eval.

The expression is parsed with :mod:`ast` and only numbers, + - * / // % ** and
parentheses are evaluated; anything else (names, calls, attributes) is refused.
Results stay within sane sizes: huge powers are refused rather than computed.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from fractions import Fraction

from pydantic import BaseModel, Field

from troupe.tools.base import ToolError, ToolOutput, TypedTool

_BINARY: dict[type[ast.operator], Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: lambda a, b: Fraction(a // b),
    ast.Mod: operator.mod,
}
_MAX_EXPONENT = 1000
_MAX_DIGITS = 5000


class CalculatorArguments(BaseModel):
    expression: str = Field(min_length=1, max_length=500, examples=["(17 * 23 + 4) / 3"])


def evaluate(expression: str) -> Fraction:
    """The exact value of an arithmetic expression; ToolError for anything else."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not an arithmetic expression: {exc.msg}") from exc
    return _value(tree.body)


def _value(node: ast.expr) -> Fraction:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):
            raise ToolError("only numbers and arithmetic are allowed, not booleans")
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _value(node.operand)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp):
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow):
            return _power(left, right)
        operation = _BINARY.get(type(node.op))
        if operation is None:
            raise ToolError(f"operator {type(node.op).__name__} is not allowed")
        if right == 0 and isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod):
            raise ToolError("division by zero")
        result = operation(left, right)
        _check_size(result)
        return result
    raise ToolError(f"only numbers and arithmetic are allowed, not {type(node).__name__}")


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise ToolError("only whole-number exponents are allowed")
    if abs(exponent) > _MAX_EXPONENT:
        raise ToolError(f"exponents are limited to ±{_MAX_EXPONENT}")
    if base == 0 and exponent < 0:
        raise ToolError("division by zero")
    result = base ** int(exponent)
    _check_size(result)
    return result


def _check_size(value: Fraction) -> None:
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > _MAX_DIGITS * 3.33:
        raise ToolError("the result is too large")


def render(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.12g} (exactly {value.numerator}/{value.denominator})"


class Calculator(TypedTool):
    """Exact arithmetic for agents."""

    name = "calculator"
    description = "Evaluate an arithmetic expression exactly (+ - * / // % ** and parentheses)."
    arguments = CalculatorArguments

    async def run(self, arguments: BaseModel) -> ToolOutput:
        assert isinstance(arguments, CalculatorArguments)
        return ToolOutput(text=render(evaluate(arguments.expression)), confidence=1.0)
