"""Plans as DAGs, in pure code: validation and scheduling.

Nothing here does I/O or reads the clock, so the workflow can call it and tests can
throw random plans at it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from troupe.domain import Plan
from troupe.errors import InvalidInput


class PlanInvalid(InvalidInput):
    """A plan that is not a runnable DAG; the message says why, for the planner to fix."""

    code = "plan_invalid"


def validate(plan: Plan, *, max_nodes: int) -> None:
    """Raise PlanInvalid unless ids are unique, dependencies known, and the graph acyclic."""
    if len(plan.nodes) > max_nodes:
        raise PlanInvalid(f"the plan has {len(plan.nodes)} nodes; at most {max_nodes} allowed")
    ids = [node.id for node in plan.nodes]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise PlanInvalid(f"node ids must be unique; repeated: {', '.join(duplicates)}")
    known = set(ids)
    for node in plan.nodes:
        unknown = [d for d in node.depends_on if d not in known]
        if unknown:
            raise PlanInvalid(f"node {node.id} depends on unknown node(s): {', '.join(unknown)}")
        if node.id in node.depends_on:
            raise PlanInvalid(f"node {node.id} depends on itself")
    cycle = _find_cycle(plan)
    if cycle:
        raise PlanInvalid(f"the plan has a cycle: {' -> '.join(cycle)}")


def _find_cycle(plan: Plan) -> list[str]:
    deps = {node.id: node.depends_on for node in plan.nodes}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = 1
        for dep in deps[node]:
            if state.get(dep) == 1:  # on the current path: we walked in a circle
                return [*path[path.index(dep) :], dep]
            if dep not in state:
                found = visit(dep, [*path, dep])
                if found:
                    return found
        state[node] = 2
        return []

    for node in deps:
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return []


def layers(plan: Plan) -> list[list[str]]:
    """Nodes grouped by depth: every node's dependencies sit in earlier layers."""
    depth: dict[str, int] = {}
    deps = {node.id: node.depends_on for node in plan.nodes}

    def depth_of(node: str) -> int:
        if node not in depth:
            depth[node] = 1 + max((depth_of(d) for d in deps[node]), default=-1)
        return depth[node]

    grouped: dict[int, list[str]] = {}
    for node in plan.nodes:
        grouped.setdefault(depth_of(node.id), []).append(node.id)
    return [grouped[d] for d in sorted(grouped)]


def ready(plan: Plan, *, done: Collection[str], started: Collection[str], limit: int) -> list[str]:
    """Up to ``limit`` nodes, in plan order, not yet started whose dependencies are done."""
    if limit <= 0:
        return []
    found: list[str] = []
    for node in plan.nodes:
        if node.id in started or node.id in done:
            continue
        if all(d in done for d in node.depends_on):
            found.append(node.id)
            if len(found) == limit:
                break
    return found


def descendants(plan: Plan, roots: Iterable[str]) -> set[str]:
    """Every node that depends, directly or not, on one of ``roots``."""
    affected = set(roots)
    changed = True
    while changed:
        changed = False
        for node in plan.nodes:
            if node.id not in affected and any(d in affected for d in node.depends_on):
                affected.add(node.id)
                changed = True
    return affected - set(roots)
