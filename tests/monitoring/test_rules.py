"""alerts.yml: promtool accepts it, its unit tests pass, and each alert is tested both ways."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.http.routes import CLAIM_ROUTE
from gateway.telemetry.metrics import LATENCY_BUCKETS
from tests.monitoring import files

# The first use installs promtool (see conftest.py), which may take minutes.
INSTALLING = pytest.mark.timeout(1200)


def promtool_run(promtool: str, *args: str, cwd: Path = files.MONITORING) -> str:
    done = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} exited {done.returncode}:\n{output}"
    return output


@INSTALLING
def test_promtool_checks_the_rules(promtool: str) -> None:
    output = promtool_run(promtool, "check", "rules", files.ALERTS.name)
    assert f"SUCCESS: {len(files.rules())} rules found" in output


@INSTALLING
def test_promtool_unit_tests_pass(promtool: str) -> None:
    output = promtool_run(promtool, "test", "rules", *(path.name for path in files.ALERT_TESTS))
    assert output.count("SUCCESS") == len(files.ALERT_TESTS)


@INSTALLING
def test_unit_tests_fail_when_an_alert_threshold_moves(promtool: str, tmp_path: Path) -> None:
    """The unit tests hold the alerts to their thresholds: lift the ingest-lag threshold above
    the test's 120 s and the test that expects the alert fails."""
    rules = files.ALERTS.read_text()
    moved = rules.replace(
        "max(backend_ingest_lag_seconds) > 60", "max(backend_ingest_lag_seconds) > 600"
    )
    assert moved != rules
    (tmp_path / "alerts.yml").write_text(moved)
    suite = yaml.safe_load(files.ALERT_TESTS[0].read_text())
    suite["tests"] = [
        case for case in suite["tests"] if alerts_checked(case) & {"BackendIngestLagHigh"}
    ]
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(suite))
    done = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode != 0
    assert "BackendIngestLagHigh" in done.stdout + done.stderr


def alerts_checked(case: dict[str, Any]) -> set[str]:
    return {check["alertname"] for check in case.get("alert_rule_test", [])}


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for path in files.ALERT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case["alert_rule_test"]:
                (fires if check["exp_alerts"] else silent).add(check["alertname"])
    names = {alert["alert"] for alert in files.alerts()}
    assert len(names) == len(files.alerts()), "two alerts share a name"
    assert names - fires == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown silent"
    assert (fires | silent) - names == set(), "tests of alerts that do not exist"


def test_alerts_name_a_severity_and_a_runbook_section() -> None:
    docs = files.DOCS.read_text()
    sections = {
        line.removeprefix("### ").strip() for line in docs.splitlines() if line.startswith("### ")
    }
    for alert in files.alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in ("page", "ticket"), name
        assert alert["annotations"]["runbook"] == f"docs/monitoring.md#{name.lower()}"
        assert name in sections, f"docs/monitoring.md has no '### {name}' section"


def test_slo_rules_read_the_gateways_claim_route_and_a_real_bucket() -> None:
    slo = [rule["expr"] for rule in files.rules() if rule.get("record", "").startswith("slo:")]
    assert len(slo) == 10
    for expr in slo:
        routes = set(re.findall(r'route="([^"]*)"', expr))
        assert routes == {CLAIM_ROUTE}
    bounds = {float(le) for expr in slo for le in re.findall(r'le="([^"]*)"', expr)}
    assert bounds == {0.1}
    assert bounds <= set(LATENCY_BUCKETS)
