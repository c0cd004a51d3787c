"""BeliefState: what a tool-using agent knows, derived from its transcript.

The state is a pure function of the agent's turns: every successful tool call adds a
fact (with the tool's confidence and the step it came from), and the agent may call
``update_beliefs`` to state facts of its own reasoning, open or close questions, and
set its plan. Derived, not stored between steps, so a replayed workflow rebuilds the
same state and nothing can drift from the transcript it describes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from troupe.domain import BeliefState, Fact
from troupe.llm.messages import ToolSpec
from troupe.orchestrator.payloads import ReactTurn
from troupe.tools.base import problems

UPDATE_BELIEFS = "update_beliefs"
MAX_FACTS = 20
MAX_QUESTIONS = 10
MAX_PLAN = 10
FACT_CHARS = 300


class StatedFact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, max_length=FACT_CHARS)
    confidence: float = Field(default=0.5, ge=0, le=1)


class BeliefUpdate(BaseModel):
    """The arguments of ``update_beliefs``."""

    model_config = ConfigDict(extra="forbid")

    facts: list[StatedFact] = Field(
        default_factory=list, description="What your reasoning established, with confidence."
    )
    open_questions: list[str] = Field(
        default_factory=list, description="Questions you still need answered."
    )
    resolved: list[str] = Field(
        default_factory=list, description="Open questions that are now answered."
    )
    plan: list[str] | None = Field(
        default=None, description="Your plan from here, in order (replaces the last one)."
    )


UPDATE_BELIEFS_SPEC = ToolSpec(
    name=UPDATE_BELIEFS,
    description=(
        "Record your working state: facts your reasoning established (with confidence "
        "0..1), questions still open or now resolved, and your plan. Costs no tool time; "
        "use it when your understanding changes."
    ),
    parameters=BeliefUpdate.model_json_schema(),
)


def parse_update(arguments: dict[str, object]) -> BeliefUpdate | str:
    """The update, or why it is not one (the agent reads that as the observation)."""
    try:
        return BeliefUpdate.model_validate(arguments)
    except ValidationError as exc:
        return f"error: bad arguments for {UPDATE_BELIEFS}: {problems(exc)}"


def beliefs_of(turns: Iterable[ReactTurn]) -> BeliefState:
    """The state after these turns, oldest first."""
    facts: list[Fact] = []
    questions: list[str] = []
    plan: tuple[str, ...] = ()
    for index, turn in enumerate(turns, start=1):
        step = turn.step or index
        if turn.tool == UPDATE_BELIEFS:
            update = parse_update(turn.arguments)
            if isinstance(update, str):
                continue
            facts += [
                Fact(
                    content=f.content,
                    source=f"step {step}: the agent's reasoning",
                    step=step,
                    confidence=f.confidence,
                )
                for f in update.facts
            ]
            questions = [q for q in questions if q not in update.resolved]
            questions += [q for q in update.open_questions if q not in questions]
            if update.plan is not None:
                plan = tuple(update.plan[:MAX_PLAN])
        elif turn.ok:
            facts.append(
                Fact(
                    content=f"{turn.tool}({_short(turn.arguments)}) → {turn.observation}"[
                        :FACT_CHARS
                    ],
                    source=f"step {step}: {turn.tool}",
                    step=step,
                    confidence=turn.confidence,
                )
            )
    return BeliefState(
        facts=tuple(facts[-MAX_FACTS:]),
        open_questions=tuple(questions[-MAX_QUESTIONS:]),
        plan=plan,
    )


def render(beliefs: BeliefState) -> str:
    """The state as the agent reads it in its prompt, facts numbered for citing."""
    if not (beliefs.facts or beliefs.open_questions or beliefs.plan):
        return "Working notes: none yet."
    lines = ["Working notes (what you rest on; cite facts as [F1], [F2] ...):"]
    lines += [
        f"[F{n}] ({f.confidence:.1f}, {f.source}) {f.content}"
        for n, f in enumerate(beliefs.facts, start=1)
    ]
    if beliefs.open_questions:
        lines.append("Open questions: " + "; ".join(beliefs.open_questions))
    if beliefs.plan:
        lines.append("Plan: " + " → ".join(beliefs.plan))
    return "\n".join(lines)


def _short(arguments: dict[str, object]) -> str:
    text = json.dumps(arguments, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 80 else text[:79] + "…"
