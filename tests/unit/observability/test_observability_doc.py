"""docs/observability.md describes every metric and every dashboard panel there is."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import REGISTRY

import troupe.observability.metrics  # noqa: F401 - declares every metric
from tests.monitoring import DASHBOARDS

DOC = (Path(__file__).parents[3] / "docs" / "observability.md").read_text()


def test_every_metric_is_documented() -> None:
    names = [f.name for f in REGISTRY.collect() if f.name.startswith("troupe_")]
    assert len(names) >= 25
    assert [n for n in names if f"`{n}" not in DOC] == []


def test_every_dashboard_panel_is_documented_with_its_question() -> None:
    for file in DASHBOARDS.glob("*.json"):
        for panel in json.loads(file.read_text())["panels"]:
            assert f"| {panel['title']} | {panel['description']} |" in DOC, panel["title"]
