"""Build Troupe's Grafana dashboards (dashboards/*.json) from the panel lists below.

    python deploy/monitoring/grafana/dashboards.py

Each panel names the question it answers (its description); docs/observability.md lists
them. A test rebuilds the dashboards and fails when the JSON files are stale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
HERE = Path(__file__).parent / "dashboards"


def _quantile(q: float, metric: str, by: str = "") -> str:
    """The q-quantile of a histogram over 5 minutes, per ``by`` label (or overall)."""
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket[5m])))"


@dataclass(frozen=True)
class Panel:
    title: str
    question: str
    targets: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat
    width: int = 12
    thresholds: list[tuple[float, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: list[Panel]
    tenant_variable: bool = False


OVERVIEW = Dashboard(
    uid="troupe-overview",
    title="Troupe / Overview and SLOs",
    description="Is Troupe answering tasks, fast enough, without errors?",
    panels=[
        Panel(
            "Tasks not failed (SLO ≥ 95%)",
            "What share of finished tasks did not fail over the last hour (cancelled, "
            "rejected and over-budget tasks are the client's, not failures)?",
            [
                (
                    '1 - sum(increase(troupe_tasks_finished_total{status="failed"}[1h]))'
                    " / sum(increase(troupe_tasks_finished_total[1h]))",
                    "not failed",
                )
            ],
            unit="percentunit",
            kind="stat",
            width=6,
            thresholds=[(0, "red"), (0.95, "green")],
        ),
        Panel(
            "p99 task time (SLO < 2 min)",
            "How long do the slowest 1% of completed tasks take from submit to answer?",
            [("troupe:task_duration_seconds:p99_10m", "p99")],
            unit="s",
            kind="stat",
            width=6,
            thresholds=[(0, "green"), (120, "red")],
        ),
        Panel(
            "API 5xx share (SLO < 1%)",
            "What share of API requests failed on our side?",
            [
                (
                    'sum(rate(troupe_http_requests_total{status=~"5.."}[5m]))'
                    " / sum(rate(troupe_http_requests_total[5m]))",
                    "5xx",
                )
            ],
            unit="percentunit",
            kind="stat",
            width=6,
            thresholds=[(0, "green"), (0.01, "red")],
        ),
        Panel(
            "Processes up",
            "Are the API and every worker answering scrapes?",
            [('sum by (job) (up{job=~"troupe-.*"})', "{{job}}")],
            kind="stat",
            width=6,
        ),
        Panel(
            "Tasks submitted and finished",
            "How many tasks arrive and end per second, by strategy and status?",
            [
                (
                    "sum by (strategy) (rate(troupe_tasks_submitted_total[5m]))",
                    "submitted {{strategy}}",
                ),
                ("sum by (status) (rate(troupe_tasks_finished_total[5m]))", "finished {{status}}"),
            ],
            unit="reqps",
        ),
        Panel(
            "Task time (p50, p99)",
            "How long do tasks take, submit to answer, per strategy?",
            [
                (
                    "histogram_quantile(0.5, sum by (le, strategy) "
                    '(rate(troupe_task_duration_seconds_bucket{status="completed"}[5m])))',
                    "p50 {{strategy}}",
                ),
                (
                    "histogram_quantile(0.99, sum by (le, strategy) "
                    '(rate(troupe_task_duration_seconds_bucket{status="completed"}[5m])))',
                    "p99 {{strategy}}",
                ),
            ],
            unit="s",
        ),
        Panel(
            "Queue wait (p99)",
            "How long do tasks wait for a worker before their first agent step?",
            [
                (
                    _quantile(0.99, "troupe_task_queue_seconds"),
                    "p99",
                )
            ],
            unit="s",
        ),
        Panel(
            "HTTP requests by status",
            "What is the API answering, route by route?",
            [
                (
                    "sum by (route, status) (rate(troupe_http_requests_total[5m]))",
                    "{{route}} {{status}}",
                )
            ],
            unit="reqps",
        ),
        Panel(
            "Refused requests",
            "Who is being turned away: rate limits, budgets, bad credentials?",
            [
                ("sum by (code) (rate(troupe_limit_rejections_total[5m]))", "429 {{code}}"),
                ("sum by (code) (rate(troupe_auth_failures_total[5m]))", "401 {{code}}"),
            ],
            unit="reqps",
        ),
        Panel(
            "Activity retries",
            "Is Temporal retrying agent steps (crashes, timeouts, provider errors)?",
            [("sum by (activity) (rate(troupe_activity_retries_total[5m]))", "{{activity}}")],
            unit="reqps",
        ),
    ],
)

COST = Dashboard(
    uid="troupe-cost",
    title="Troupe / Cost and budgets",
    description="What are tenants spending, and who is about to hit a budget?",
    tenant_variable=True,
    panels=[
        Panel(
            "Daily budget used",
            "How much of today's budget has each tenant used (alert at 80%)?",
            [('troupe_budget_daily_utilization_ratio{tenant=~"$tenant"}', "{{tenant}}")],
            unit="percentunit",
            thresholds=[(0, "green"), (0.8, "orange"), (1, "red")],
        ),
        Panel(
            "Cost per hour (USD)",
            "How fast is each tenant spending money?",
            [
                (
                    'sum by (tenant) (rate(troupe_llm_cost_micro_usd_total{tenant=~"$tenant"}[5m]))'
                    " * 3600 / 1e6",
                    "{{tenant}}",
                )
            ],
            unit="currencyUSD",
        ),
        Panel(
            "Tokens per second by kind",
            "How many prompt and completion tokens are tenants using?",
            [
                (
                    'sum by (tenant, kind) (rate(troupe_llm_tokens_total{tenant=~"$tenant"}[5m]))',
                    "{{tenant}} {{kind}}",
                )
            ],
        ),
        Panel(
            "Cost by model (USD, last 24 h)",
            "Which models does the money go to?",
            [
                (
                    "sum by (provider, model) "
                    '(increase(troupe_llm_cost_micro_usd_total{tenant=~"$tenant"}[24h])) / 1e6',
                    "{{provider}} {{model}}",
                )
            ],
            unit="currencyUSD",
            kind="stat",
        ),
        Panel(
            "Calls refused for budget",
            "How often did a budget stop a model call before it was made?",
            [
                ("sum(rate(troupe_budget_refusals_total[5m]))", "refused"),
                (
                    'sum(rate(troupe_limit_rejections_total{code="budget_exhausted"}[5m]))',
                    "429 at submit",
                ),
            ],
            unit="reqps",
        ),
        Panel(
            "Prompt cache hit ratio",
            "What share of model calls did the prompt cache answer for free?",
            [
                (
                    'sum(rate(troupe_llm_cache_lookups_total{result="hit"}[5m]))'
                    " / sum(rate(troupe_llm_cache_lookups_total[5m]))",
                    "hits",
                )
            ],
            unit="percentunit",
        ),
    ],
)

AGENTS = Dashboard(
    uid="troupe-agents",
    title="Troupe / Agents and providers",
    description="How are agents and the model providers behind them doing?",
    panels=[
        Panel(
            "Agent step time (p95)",
            "How long does each kind of agent step take?",
            [
                (
                    _quantile(0.95, "troupe_agent_duration_seconds", "agent"),
                    "{{agent}}",
                )
            ],
            unit="s",
        ),
        Panel(
            "Agent steps failing",
            "Which kind of agent step ends in error?",
            [
                (
                    "sum by (agent) "
                    '(rate(troupe_agent_duration_seconds_count{outcome="error"}[5m]))',
                    "{{agent}}",
                )
            ],
            unit="reqps",
        ),
        Panel(
            "LLM calls by model",
            "Which models serve the calls, and how many?",
            [
                (
                    "sum by (provider, model) (rate(troupe_llm_call_duration_seconds_count[5m]))",
                    "{{provider}} {{model}}",
                )
            ],
            unit="reqps",
        ),
        Panel(
            "LLM latency (p95) and time to first token",
            "How fast are the providers answering?",
            [
                (
                    _quantile(0.95, "troupe_llm_call_duration_seconds", "model"),
                    "call {{model}}",
                ),
                (
                    _quantile(0.95, "troupe_llm_first_token_seconds", "model"),
                    "first token {{model}}",
                ),
            ],
            unit="s",
        ),
        Panel(
            "Provider errors and fallbacks",
            "Which providers fail, why, and how often do calls move on to another candidate?",
            [
                (
                    "sum by (provider, code) (rate(troupe_llm_provider_errors_total[5m]))",
                    "error {{provider}} {{code}}",
                ),
                (
                    "sum by (provider, reason) (rate(troupe_llm_fallbacks_total[5m]))",
                    "fallback {{provider}} {{reason}}",
                ),
            ],
            unit="reqps",
        ),
        Panel(
            "Circuit breakers open",
            "Which providers are being kept away from right now?",
            [("max by (provider) (troupe_llm_breaker_open)", "{{provider}}")],
            kind="stat",
            thresholds=[(0, "green"), (1, "red")],
        ),
        Panel(
            "Tool calls",
            "Which tools do agents use, and how often do they fail?",
            [
                (
                    "sum by (tool, outcome) (rate(troupe_tool_calls_total[5m]))",
                    "{{tool}} {{outcome}}",
                )
            ],
            unit="reqps",
        ),
        Panel(
            "Tool time (p95)",
            "Which tools are slow?",
            [
                (
                    _quantile(0.95, "troupe_tool_call_duration_seconds", "tool"),
                    "{{tool}}",
                )
            ],
            unit="s",
        ),
        Panel(
            "Memory",
            "Are memories being written and recalled, and do summaries run?",
            [
                (
                    "sum by (operation, outcome) (rate(troupe_memory_operations_total[5m]))",
                    "{{operation}} {{outcome}}",
                ),
                ("sum(rate(troupe_session_summaries_total[5m]))", "summaries"),
            ],
            unit="reqps",
        ),
    ],
)

SANDBOX_POLICY = Dashboard(
    uid="troupe-sandbox-policy",
    title="Troupe / Sandbox and policy",
    description="Is untrusted code contained, and what is the policy deciding?",
    panels=[
        Panel(
            "Sandbox runs by outcome",
            "How many runs end normally, with an error, or killed?",
            [("sum by (outcome) (rate(troupe_sandbox_runs_total[5m]))", "{{outcome}}")],
            unit="reqps",
        ),
        Panel(
            "Sandbox kills by reason",
            "Which limit stops runs: CPU (fuel), time, memory, disk?",
            [("sum by (reason) (rate(troupe_sandbox_kills_total[5m]))", "{{reason}}")],
            unit="reqps",
        ),
        Panel(
            "Fuel per run (p50, p95)",
            "How much CPU does agent code use, against the fuel limit?",
            [
                (
                    _quantile(0.5, "troupe_sandbox_fuel"),
                    "p50",
                ),
                (
                    _quantile(0.95, "troupe_sandbox_fuel"),
                    "p95",
                ),
            ],
        ),
        Panel(
            "Sandbox run time (p95)",
            "How long do runs take, wall clock?",
            [
                (
                    _quantile(0.95, "troupe_sandbox_run_duration_seconds"),
                    "p95",
                )
            ],
            unit="s",
        ),
        Panel(
            "Policy decisions",
            "What is the policy allowing, sending for approval, denying?",
            [
                (
                    "sum by (action, result) (rate(troupe_policy_decisions_total[5m]))",
                    "{{action}} {{result}}",
                )
            ],
            unit="reqps",
        ),
        Panel(
            "Denials",
            "Which actions are being denied (a surge: a misconfigured plan, or probing)?",
            [
                (
                    'sum by (action) (increase(troupe_policy_decisions_total{result="deny"}[1h]))',
                    "{{action}}",
                )
            ],
            kind="stat",
        ),
    ],
)

DASHBOARDS = [OVERVIEW, COST, AGENTS, SANDBOX_POLICY]


def render(dashboard: Dashboard) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    x = y = 0
    row_height = 8
    for number, panel in enumerate(dashboard.panels, 1):
        if x + panel.width > 24:
            x, y = 0, y + row_height
        steps = [
            {"color": color, "value": None if n == 0 else value}
            for n, (value, color) in enumerate(panel.thresholds or [(0, "green")])
        ]
        panels.append(
            {
                "id": number,
                "type": panel.kind,
                "title": panel.title,
                "description": panel.question,
                "datasource": DATASOURCE,
                "gridPos": {"x": x, "y": y, "w": panel.width, "h": row_height},
                "fieldConfig": {
                    "defaults": {
                        "unit": panel.unit,
                        "thresholds": {"mode": "absolute", "steps": steps},
                    },
                    "overrides": [],
                },
                "options": {},
                "targets": [
                    {
                        "refId": chr(ord("A") + n),
                        "datasource": DATASOURCE,
                        "expr": expr,
                        "legendFormat": legend,
                    }
                    for n, (expr, legend) in enumerate(panel.targets)
                ],
            }
        )
        x += panel.width
    templating: list[dict[str, Any]] = []
    if dashboard.tenant_variable:
        templating.append(
            {
                "name": "tenant",
                "label": "Tenant",
                "type": "query",
                "datasource": DATASOURCE,
                "query": {
                    "query": "label_values(troupe_llm_tokens_total, tenant)",
                    "refId": "tenant",
                },
                "definition": "label_values(troupe_llm_tokens_total, tenant)",
                "includeAll": True,
                "multi": True,
                "allValue": ".*",
                "current": {"text": "All", "value": "$__all"},
                "refresh": 2,
            }
        )
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["troupe"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": templating},
        "panels": panels,
    }


def files() -> dict[str, str]:
    """Every dashboard's file name and JSON text."""
    return {
        f"{d.uid}.json": json.dumps(render(d), indent=2, ensure_ascii=False) + "\n"
        for d in DASHBOARDS
    }


if __name__ == "__main__":
    for name, text in files().items():
        (HERE / name).write_text(text)
