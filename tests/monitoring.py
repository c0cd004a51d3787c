"""What the monitoring configuration (deploy/monitoring) refers to: metric names in alert
rules and dashboards, and the sample names metrics.py can export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import troupe.observability.metrics  # noqa: F401 - declares every metric

MONITORING = Path(__file__).parents[1] / "deploy" / "monitoring"
RULES = MONITORING / "prometheus" / "rules" / "troupe-alerts.yml"
DASHBOARDS = MONITORING / "grafana" / "dashboards"
# A metric name not followed by ":" (recording rules are troupe:...).
_NAME = re.compile(r"\b(troupe_[a-z0-9_]+)\b")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    found = []
    for file in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(file.read_text())
        found += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        found += [v["definition"] for v in dashboard["templating"]["list"]]
    return found


def referenced_samples() -> set[str]:
    """Every troupe_* sample name the rules and dashboards query."""
    return {
        name
        for expr in rule_expressions() + dashboard_expressions()
        for name in _NAME.findall(expr)
    }


def exportable_samples() -> set[str]:
    """Every sample name the metrics of metrics.py can export."""
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("troupe_"):
            names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
    return names
