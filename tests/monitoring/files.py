"""The monitoring files under test, loaded once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

MONITORING = Path(__file__).resolve().parents[2] / "config" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = (MONITORING / "alerts_test.yml", MONITORING / "alerts_test_3d.yml")
DASHBOARD = MONITORING / "dashboard.json"
DOCS = MONITORING.parents[1] / "docs" / "monitoring.md"


def rules() -> list[dict[str, Any]]:
    """Every rule of alerts.yml, recording and alerting, in file order."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard_panels() -> list[dict[str, Any]]:
    """The dashboard's panels, rows excluded."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [panel for panel in panels if panel["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel["targets"]]
