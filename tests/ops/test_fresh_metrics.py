"""A fresh gateway exposes every series whose labels the configuration fixes, at 0."""

from __future__ import annotations

import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from gateway.telemetry.metrics import CLAIM_RESULTS, REDEMPTION_RESULTS
from supplier_pool.pool import OUTCOMES
from tests.support.served import serve

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXTRA = """
[[suppliers]]
id = "alpha"
base_url = "http://127.0.0.1:9/s/alpha"

[limits]
claim = [{by = "ip", limit = 20, window_s = 60}]
"""


def documented_metrics() -> set[str]:
    table = (ROOT / "docs" / "operations.md").read_text()
    return set(re.findall(r"`(gateway_[a-z_]+)`", table))


def test_a_fresh_gateway_has_every_documented_series(tmp_path: Path, valkey_url: str):
    with (
        serve(tmp_path, valkey_url, workers=2, extra=EXTRA) as served,
        urllib.request.urlopen(served.public + "/metrics", timeout=10) as response,
    ):
        text = response.read().decode()
    series = {line.split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
    expected = {
        *(f'gateway_claims_total{{result="{r}"}}' for r in CLAIM_RESULTS),
        *(f'gateway_redemptions_total{{result="{r}"}}' for r in REDEMPTION_RESULTS),
        *(f'gateway_supplier_calls_total{{outcome="{o}",supplier="alpha"}}' for o in OUTCOMES),
        'gateway_supplier_breaker_state{supplier="alpha"}',
        'gateway_ratelimit_rejections_total{dimension="ip",route="claim",source="redis"}',
        'gateway_ratelimit_rejections_total{dimension="failures",route="redeem",source="local"}',
        'gateway_risk_decisions_total{decision="deny",mode="enforce",rule="blocked_ips"}',
        "gateway_soldout_local_total",
        "gateway_shed_requests_total",
        "gateway_idempotent_replays_total",
        "gateway_pending_redemptions",
        "gateway_in_flight_requests",
    }
    assert expected - series == set()
    # Every family the docs name is exported (labelled families with no fixed set included).
    families = {line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE")}
    per_campaign = {"gateway_campaign_stock_left"}  # one series per campaign, none before one
    assert documented_metrics() - families == per_campaign


def test_build_info_names_the_version_and_commit(tmp_path: Path, valkey_url: str):
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.strip()[:12]
    with (
        serve(tmp_path, valkey_url, workers=1) as served,
        urllib.request.urlopen(served.public + "/metrics", timeout=10) as response,
    ):
        text = response.read().decode()
    assert f'gateway_build_info{{commit="{commit}",version="0.1.0"}} 1.0' in text
