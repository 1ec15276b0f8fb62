"""A short real load test against a real gateway: its own campaign, many client addresses.

`python -m loadtests.run` with Locust's own knobs (a few users for a few seconds) against
`gateway serve` trusting 127.0.0.1 as a proxy, as config/demo.toml does: the run creates and
then pauses a campaign of its own, leaves the other campaigns alone, prints progress, the
guessers are locked out and the honest redemptions succeed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from loadtests import run as loadtests_run
from loadtests.settings import Settings, SpikePlan
from tests.support.served import ADMIN_TOKEN, API_KEY, config_text, free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]
GUESS_RULES = """
[[risk.rules]]
id = "guesses_per_ip"
kind = "failed_redemptions_per_ip"
threshold = 10
window_s = 600

[[risk.rules]]
id = "guesses_per_device"
kind = "failed_redemptions_per_device"
threshold = 10
window_s = 600
"""
DEMO_CAMPAIGN = {
    "starts_at": "2020-01-01T00:00:00Z",
    "ends_at": "2099-01-01T00:00:00Z",
    "stock": 100,
    "benefit": {"kind": "voucher"},
}


def admin(base: str, method: str, path: str, body: object = None) -> Any:
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(f"{base}{path}", data=data, method=method)
    request.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=5) as response:
        return orjson.loads(response.read())


@pytest.mark.slow
def test_a_short_run_uses_its_own_campaign_and_spreads_users_over_addresses(
    tmp_path: Path, valkey_url: str, redis_client: Any
) -> None:
    port, admin_port = free_port(), free_port()
    config = config_text(valkey_url, port, admin_port, 1, GUESS_RULES).replace(
        "[server]\n", '[server]\ntrusted_proxies = ["127.0.0.1"]\n', 1
    )
    (tmp_path / "gateway.toml").write_text(config)
    public, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    with open(tmp_path / "gateway.log", "wb") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", "gateway.toml"],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(public)
        admin(admin_url, "PUT", "/admin/campaigns/demo-flash-sale", DEMO_CAMPAIGN)
        env = {
            **os.environ,
            "HOST": public,
            "ADMIN_URL": admin_url,
            "API_KEY": API_KEY,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "REPORT_DIR": str(tmp_path / "reports"),
            "PROGRESS_S": "2",
            "GUESS_LOCKOUT": "10",
        }
        knobs = ["-u", "11", "-r", "11", "-t", "8s"]
        run = subprocess.run(
            [sys.executable, "-m", "loadtests.run", "--stock", "300", *knobs],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        demo_stats = admin(admin_url, "GET", "/admin/campaigns/demo-flash-sale/stats")
        created = re.search(r"campaign (loadtest-\d+) created", run.stdout)
        assert created, run.stdout + run.stderr
        own = admin(admin_url, "GET", f"/admin/campaigns/{created[1]}")
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(20)
    report = f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert run.returncode == 0, report
    assert run.stdout.strip().endswith("invariants: ok"), report
    assert (own["stock_added"], own["state"]) == (300, "paused"), own
    assert demo_stats["granted"] == 0 and demo_stats["rejected"] == {}, demo_stats
    assert len(re.findall(r"^progress ", run.stdout, re.M)) >= 2, report
    outcomes = orjson.loads(next((tmp_path / "reports").glob("ledger-*.json")).read_bytes())[
        "outcomes"
    ]
    guesses_refused = sum(n for k, n in outcomes.items() if k.startswith("redeem [guess] 429"))
    honest_ok = sum(n for k, n in outcomes.items() if re.match(r"redeem 20[02]", k))
    honest_refused = sum(n for k, n in outcomes.items() if re.match(r"redeem [34]\d\d", k))
    assert guesses_refused > 0, outcomes  # the guesser was locked out ...
    assert honest_ok > 0 and honest_refused == 0, outcomes  # ... and no honest redeemer


@pytest.mark.parametrize(
    ("text", "expected"), [("90", 90), ("30s", 30), ("2m", 120), ("1h30m", 5400)]
)
def test_locust_run_times_are_read_as_locust_reads_them(text: str, expected: float) -> None:
    assert loadtests_run.seconds(text) == expected


def test_locusts_own_knobs_set_the_spike_shape_aside() -> None:
    settings, plan = Settings(), SpikePlan()
    spike = loadtests_run.locust_command(settings, [], web=False)
    assert "--locustfile" not in spike and "loadtests/locust.conf" in spike  # with the shape
    knobs = loadtests_run.locust_command(settings, ["-u", "5", "--run-time=1m"], web=False)
    assert knobs[knobs.index("--locustfile") + 1] == "loadtests/locustfile.py"
    assert knobs[-3:] == ["-u", "5", "--run-time=1m"]
    web = loadtests_run.locust_command(settings, [], web=True)
    assert "loadtests/locust.conf" not in web and "--headless" not in web  # the UI decides
    assert loadtests_run.timeout_s(plan, [], web=False) == plan.total_s + loadtests_run.GRACE_S
    assert loadtests_run.timeout_s(plan, ["-t", "2m"], web=False) == 120 + loadtests_run.GRACE_S
    assert loadtests_run.timeout_s(plan, [], web=True) is None
    args, extra = loadtests_run.parse(["--fresh-stock", "7", "-u", "3"])
    assert (args.stock, extra) == (7, ["-u", "3"])
