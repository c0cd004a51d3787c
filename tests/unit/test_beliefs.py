"""BeliefState is a pure function of an agent's turns."""

from __future__ import annotations

import pytest

from troupe.agents.beliefs import MAX_FACTS, beliefs_of, parse_update, render
from troupe.orchestrator.payloads import ReactTurn

pytestmark = pytest.mark.unit


def _turn(tool: str, observation: str = "ok", *, step: int, **fields: object) -> ReactTurn:
    arguments = fields.pop("arguments", {})
    return ReactTurn(
        thought="", tool=tool, arguments=arguments, observation=observation, step=step, **fields
    )


def test_the_same_turns_always_give_the_same_state() -> None:
    turns = (
        _turn("update_beliefs", step=1, arguments={"plan": ["a", "b"], "open_questions": ["q"]}),
        _turn("calculator", "4", step=1, arguments={"expression": "2+2"}, confidence=1.0),
    )
    assert beliefs_of(turns) == beliefs_of(turns)
    state = beliefs_of(turns)
    assert state.plan == ("a", "b")
    assert [f.content for f in state.facts] == ['calculator({"expression": "2+2"}) → 4']


def test_failed_calls_and_malformed_updates_add_nothing() -> None:
    turns = (
        _turn("calculator", "error: division by zero", step=1, ok=False),
        _turn("update_beliefs", step=2, arguments={"facts": [{"content": ""}]}),
        _turn("update_beliefs", step=3, arguments={"nonsense": True}),
    )
    state = beliefs_of(turns)
    assert (state.facts, state.open_questions, state.plan) == ((), (), ())
    assert render(state) == "Working notes: none yet."


def test_a_malformed_update_is_explained_to_the_agent() -> None:
    refusal = parse_update({"facts": [{"content": "x", "confidence": 2}]})
    assert isinstance(refusal, str)
    assert refusal.startswith("error: bad arguments for update_beliefs: facts.0.confidence")


def test_only_the_latest_facts_are_kept() -> None:
    turns = tuple(_turn("calculator", str(n), step=n) for n in range(1, MAX_FACTS + 6))
    state = beliefs_of(turns)
    assert len(state.facts) == MAX_FACTS
    assert state.facts[0].step == 6
    assert state.facts[-1].source == f"step {MAX_FACTS + 5}: calculator"


def test_histories_without_step_numbers_count_each_turn_as_a_step() -> None:
    state = beliefs_of((_turn("calculator", "1", step=0), _turn("calculator", "2", step=0)))
    assert [f.step for f in state.facts] == [1, 2]
