"""deploy/monitoring: alert rules pass promtool's checks and unit tests, dashboards are
current and well formed, and everything they query is declared in metrics.py."""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess

import pytest
import yaml

from tests.monitoring import (
    DASHBOARDS,
    MONITORING,
    RULES,
    exportable_samples,
    referenced_samples,
)

pytestmark = pytest.mark.integration


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool is not None, (
        "promtool is not installed: `make test` installs it (apt-get install prometheus); "
        "or install Prometheus's promtool by hand"
    )
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_alert_rules_pass_promtool_check() -> None:
    checked = _promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 11 rules found" in checked.stdout


def test_every_alert_fires_in_promtools_unit_tests() -> None:
    tested = _promtool("test", "rules", str(RULES.with_name("troupe-alerts.test.yml")))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert of the rules has at least one test that expects it to fire.
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tests = yaml.safe_load(RULES.with_name("troupe-alerts.test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert alerts == fired


def test_the_prometheus_config_is_valid() -> None:
    checked = _promtool("check", "config", str(MONITORING / "prometheus" / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_metric_the_rules_and_dashboards_query_is_declared() -> None:
    referenced = referenced_samples()
    assert len(referenced) >= 20
    assert referenced - exportable_samples() == set()


def test_the_dashboards_are_current_and_well_formed() -> None:
    built = runpy.run_path(str(MONITORING / "grafana" / "dashboards.py"))["files"]()
    on_disk = {f.name: f.read_text() for f in DASHBOARDS.glob("*.json")}
    assert on_disk == built, "run python deploy/monitoring/grafana/dashboards.py"
    assert len(on_disk) >= 3
    uids = set()
    for text in on_disk.values():
        dashboard = json.loads(text)
        uids.add(dashboard["uid"])
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for panel in dashboard["panels"]:
            assert panel["description"].endswith("?"), panel["title"]  # the question
            assert panel["targets"], panel["title"]
            assert all(t["datasource"]["uid"] == "prometheus" for t in panel["targets"])
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24
    assert len(uids) == len(on_disk)
    provisioning = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert provisioning["datasources"][0]["uid"] == "prometheus"
