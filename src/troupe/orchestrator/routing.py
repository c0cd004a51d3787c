"""Complexity routing: which strategy a task gets when the client does not force one.

A heuristic in pure code: long queries, or queries that list several things to do,
are planned as a DAG; everything else goes to one agent, which is cheaper and faster.
"""

from __future__ import annotations

import re

from troupe.config import OrchestratorSettings
from troupe.domain import Strategy

# Signs that a query asks for several pieces of work: list items, numbered steps,
# sequencing words and comparisons.
_MARKERS = re.compile(
    r"(?im)^\s*(?:[-*•]|\d+[.)])\s+"  # a list item or numbered step
    r"|\b(?:then|after that|afterwards|finally|compare|versus|vs\.?)\b"
    r"|;"
)


def complexity_markers(query: str) -> int:
    return len(_MARKERS.findall(query))


def choose_strategy(query: str, settings: OrchestratorSettings) -> Strategy:
    """``dag`` for long or many-part queries, else ``simple``."""
    if len(query.split()) >= settings.dag_min_words:
        return Strategy.DAG
    if complexity_markers(query) >= settings.dag_min_markers:
        return Strategy.DAG
    return Strategy.SIMPLE
