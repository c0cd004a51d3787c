"""Complexity routing: long or many-part queries go to a team, the rest to one agent."""

from __future__ import annotations

import pytest

from troupe.config import OrchestratorSettings
from troupe.domain import Strategy
from troupe.orchestrator.routing import choose_strategy, complexity_markers

pytestmark = pytest.mark.unit

SETTINGS = OrchestratorSettings(dag_min_words=20, dag_min_markers=3)


@pytest.mark.parametrize(
    ("query", "strategy"),
    [
        ("What is the capital of France?", Strategy.SIMPLE),
        ("Compare Postgres versus MySQL; then pick one", Strategy.DAG),
        ("1. collect prices\n2. compare them\n3. write a summary", Strategy.DAG),
        ("- research\n- draft", Strategy.SIMPLE),
        (" ".join(["word"] * 20), Strategy.DAG),
        (" ".join(["word"] * 19), Strategy.SIMPLE),
    ],
)
def test_routing_by_length_and_markers(query: str, strategy: Strategy) -> None:
    assert choose_strategy(query, SETTINGS) is strategy


def test_markers_count_lists_sequences_and_comparisons() -> None:
    assert complexity_markers("first this, then that; finally compare") == 4
    assert complexity_markers("plain question") == 0
