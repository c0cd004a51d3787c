"""What `troupe serve` exports after real work: every series the dashboards and alert
rules query, and the budget gauge that makes the budget alert fire."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.e2e.processes import TroupeProcess, new_tenant_key
from tests.fakes import FakeCollector
from tests.monitoring import RULES, referenced_samples
from troupe.client import TroupeAPIError, TroupeClient

pytestmark = pytest.mark.e2e


def _scrape(process: TroupeProcess) -> str:
    return httpx.get(f"{process.url}/metrics").text


def _value(text: str, sample: str) -> float:
    """The value of one exact series line (name with its labels) of a scrape."""
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{sample} not exported"
    return float(match[1])


def _rule_description(alert: str) -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == alert]
    return str(rule["annotations"]["description"])


def test_every_series_the_dashboards_and_alerts_query_is_exported_after_a_run(
    client: TroupeClient, served: TroupeProcess
) -> None:
    for strategy, query in (
        ("simple", "Name three rivers"),
        ("dag", "Compare Kyoto, Osaka and Nara for a weekend, with costs and trains"),
        ("react", "What is 6 * 7?"),
    ):
        task = client.wait(client.submit_task(query, strategy=strategy).id)
        assert task.status == "completed", task.error
    text = _scrape(served)
    exported = set(re.findall(r"^(troupe_[a-z0-9_]+)", text, re.MULTILINE))
    assert referenced_samples() - exported == set()
    # And the work shows in them.
    assert _value(text, 'troupe_tasks_finished_total{status="completed",strategy="dag"}') >= 1
    assert _value(text, 'troupe_agent_duration_seconds_count{agent="node",outcome="ok"}') >= 3
    assert _value(text, 'troupe_tool_calls_total{outcome="ok",tool="calculator"}') >= 1
    assert _value(text, 'troupe_task_queue_seconds_count{strategy="react"}') >= 1
    assert 'troupe_build_info{role="serve",version="' in text


def test_the_budget_alert_fires_on_the_gauge_the_platform_exports(
    served: TroupeProcess, tmp_path: Path
) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: `make test` installs it"
    key = new_tenant_key(served, "obs-budget", "--daily-tokens", "120")
    with TroupeClient(served.url, api_key=key) as client:
        refusals: list[str] = []
        for _ in range(5):  # until the day is (nearly) used up
            try:
                client.wait(client.submit_task("Spend a little of the budget").id)
            except TroupeAPIError as refused:
                refusals.append(refused.code)
                break
        assert refusals in ([], ["budget_exhausted"])
    series = 'troupe_budget_daily_utilization_ratio{tenant="obs-budget"}'
    used = _value(_scrape(served), series)
    assert used >= 0.8
    # The series exactly as scraped, crossing from nothing to what the tenant used.
    test_file = tmp_path / "budget.test.yml"
    test_file.write_text(
        f"""rule_files: [{RULES}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: '{series}'
        values: "0 {used}"
    alert_rule_test:
      - eval_time: 0m
        alertname: TroupeTenantDailyBudgetHigh
        exp_alerts: []
      - eval_time: 1m
        alertname: TroupeTenantDailyBudgetHigh
        exp_alerts:
          - exp_labels: {{severity: warning, tenant: obs-budget}}
            exp_annotations:
              summary: "Tenant obs-budget used {used * 100:.4g}% of today's budget"
              description: "{_rule_description("TroupeTenantDailyBudgetHigh")}"
"""
    )
    tested = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, check=False
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_traces_reach_an_otlp_collector_and_the_task_names_its_trace(tmp_path: Path) -> None:
    with FakeCollector() as collector:
        data = tmp_path / "traced"
        env = {
            "TROUPE_DATA_DIR": str(data),
            "TROUPE_TRACING__ENABLED": "true",
            "TROUPE_TRACING__OTLP_ENDPOINT": collector.endpoint,
            "TROUPE_MEMORY__ENABLED": "false",
        }
        traced = TroupeProcess("serve", env=env, log=data.with_suffix(".log"))
        traced.start()
        try:
            with TroupeClient(traced.url, api_key=traced.api_key) as client:
                task = client.wait(client.submit_task("Trace me").id)
        finally:
            assert traced.stop() == 0, traced.output()  # stopping flushes the batch
    assert task.trace_id is not None
    spans = [
        span
        for body in collector.exports
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    mine = {s.name for s in spans if s.trace_id.hex() == task.trace_id}
    assert {"POST /api/v1/tasks", "RunWorkflow:TaskWorkflow", "llm.call"} <= mine
