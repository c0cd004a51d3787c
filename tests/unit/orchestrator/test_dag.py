"""Plan validation and scheduling, against random plans."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from troupe.domain import Plan, PlanNode
from troupe.orchestrator import dag

pytestmark = pytest.mark.unit


def _node(node_id: str, *deps: str) -> PlanNode:
    return PlanNode(id=node_id, role="worker", instructions=f"do {node_id}", depends_on=deps)


def _plan(*nodes: PlanNode) -> Plan:
    return Plan(nodes=nodes, synthesis="combine")


@st.composite
def dags(draw: st.DrawFn, max_size: int = 12) -> Plan:
    """Random DAGs: each node may depend on any earlier ones, then shuffled."""
    size = draw(st.integers(1, max_size))
    nodes = []
    for index in range(size):
        deps = draw(st.sets(st.integers(0, index - 1), max_size=3)) if index else set()
        nodes.append(_node(f"n{index}", *(f"n{d}" for d in sorted(deps))))
    order = draw(st.permutations(nodes))
    return _plan(*order)


@given(dags())
def test_random_dags_are_valid_and_layers_respect_dependencies(plan: Plan) -> None:
    dag.validate(plan, max_nodes=12)
    depth = {node: i for i, layer in enumerate(dag.layers(plan)) for node in layer}
    assert set(depth) == {n.id for n in plan.nodes}
    for node in plan.nodes:
        assert all(depth[d] < depth[node.id] for d in node.depends_on)


@given(dags(), st.integers(1, 5), st.randoms(use_true_random=False))
def test_scheduling_respects_dependencies_and_the_parallel_limit(
    plan: Plan, limit: int, rng: random.Random
) -> None:
    deps = {n.id: set(n.depends_on) for n in plan.nodes}
    done: set[str] = set()
    running: set[str] = set()
    started: set[str] = set()
    while len(done) < len(plan.nodes):
        for node in dag.ready(plan, done=done, started=started, limit=limit - len(running)):
            assert deps[node] <= done, "started before its dependencies finished"
            running.add(node)
            started.add(node)
        assert 0 < len(running) <= limit
        finished = rng.choice(sorted(running))
        running.remove(finished)
        done.add(finished)
    assert started == done == set(deps)


@given(dags(max_size=8), st.data())
def test_a_back_edge_makes_a_cycle_that_is_rejected_and_named(
    plan: Plan, data: st.DataObject
) -> None:
    deep = [n for n in plan.nodes if n.depends_on]
    if not deep:
        return
    node = data.draw(st.sampled_from(deep))
    ancestor = node.depends_on[0]
    looped = [
        n.model_copy(update={"depends_on": (*n.depends_on, node.id)}) if n.id == ancestor else n
        for n in plan.nodes
    ]
    with pytest.raises(dag.PlanInvalid, match="cycle") as caught:
        dag.validate(_plan(*looped), max_nodes=12)
    assert node.id in caught.value.message


@pytest.mark.parametrize(
    ("plan", "reason"),
    [
        (_plan(_node("a"), _node("a")), "unique; repeated: a"),
        (_plan(_node("a", "ghost")), "unknown node(s): ghost"),
        (_plan(_node("a", "a")), "depends on itself"),
        (_plan(_node("a", "b"), _node("b", "a")), "cycle"),
        (_plan(*(_node(f"n{i}") for i in range(6))), "at most 5"),
    ],
)
def test_invalid_plans_are_rejected_with_a_reason(plan: Plan, reason: str) -> None:
    with pytest.raises(dag.PlanInvalid) as caught:
        dag.validate(plan, max_nodes=5)
    assert reason in caught.value.message


def test_descendants_are_everything_downstream() -> None:
    plan = _plan(_node("a"), _node("b", "a"), _node("c", "b"), _node("d"), _node("e", "d", "c"))
    assert dag.descendants(plan, ["b"]) == {"c", "e"}
    assert dag.descendants(plan, ["d"]) == {"e"}
