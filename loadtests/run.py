"""Run the flash-sale spike headless against HOST and print the invariant verdict.

    python -m loadtests.run                      # against CAMPAIGN (default demo-flash-sale)
    python -m loadtests.run --fresh-stock 500    # against a new campaign made via the admin API

Reports land in loadtests/reports/ (flash_sale_*.csv, flash_sale.html, ledger-*.json,
verdict.txt). The run is bounded by the spike plan (default 60 s) plus a hard timeout. Exit
code: Locust's (1 on request failures or an invariant breach, 2 when nothing could be judged).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from loadtests.settings import Settings, SpikePlan

ROOT = Path(__file__).resolve().parents[1]
CONF = "loadtests/locust.conf"
GRACE_S = 60.0  # start-up, stop-timeout and report writing on top of the plan


def _request(url: str, token: str, method: str = "GET", body: object = None) -> bytes:
    data = None if body is None else orjson.dumps(body)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=5) as response:
        return bytes(response.read())


def reachable(settings: Settings) -> str | None:
    """None when the gateway answers /healthz, else why not."""
    try:
        _request(f"{settings.host}/healthz", settings.api_key)
    except (OSError, urllib.error.URLError) as exc:
        return f"gateway not reachable at {settings.host} ({exc}); start it, e.g. `gateway demo`"
    return None


def create_campaign(settings: Settings, stock: int) -> str:
    """PUT a new voucher campaign that is live now; returns its id."""
    campaign_id = f"loadtest-{int(time.time())}"
    now = datetime.now(UTC)
    body = {
        "name": f"load test {now:%Y-%m-%d %H:%M:%S}",
        "starts_at": (now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ends_at": (now + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "stock": stock,
        "per_user_limit": settings.per_user_limit,
        "per_device_limit": settings.per_device_limit or 1,
        "voucher_ttl_s": 86_400,
        "benefit": {"kind": "voucher", "sku": "loadtest-voucher", "suppliers": []},
    }
    _request(
        f"{settings.admin_url}/admin/campaigns/{campaign_id}", settings.admin_token, "PUT", body
    )
    time.sleep(1.1)  # admin changes govern claims within 1 s (SPEC §3)
    return campaign_id


def clear_reports(report_dir: Path) -> None:
    """Drop the previous run's ledgers and verdict so they are not merged by mistake."""
    report_dir.mkdir(parents=True, exist_ok=True)
    for old in [*report_dir.glob("ledger-*.json"), report_dir / "verdict.txt"]:
        old.unlink(missing_ok=True)


def run_locust(env: dict[str, str], timeout_s: float) -> int:
    """Locust headless with the spike shape; killed if it outlives `timeout_s`."""
    settings = Settings.from_env(env)
    cmd = [sys.executable, "-m", "locust", "--config", CONF, "--host", settings.host]
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout_s, check=False).returncode
    except subprocess.TimeoutExpired:
        print(f"locust still running after {timeout_s:.0f} s: killed", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Set up, run, report; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m loadtests.run", description=__doc__)
    parser.add_argument("--fresh-stock", type=int, metavar="N", help="create a campaign first")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    settings, plan = Settings.from_env(env), SpikePlan.from_env(env)
    if why := reachable(settings):
        print(f"invariants: ERROR {why}")
        return 2
    if args.fresh_stock is not None:
        env["CAMPAIGN"] = create_campaign(settings, args.fresh_stock)
        env["PER_DEVICE_LIMIT"] = str(settings.per_device_limit or 1)
        print(f"campaign {env['CAMPAIGN']} created with stock {args.fresh_stock}")
    clear_reports(settings.report_dir)
    print(f"spike: {plan.users} users, {plan.total_s:.0f} s, against {settings.host}", flush=True)
    code = run_locust(env, plan.total_s + GRACE_S)
    verdict_file = settings.report_dir / "verdict.txt"
    line = (
        verdict_file.read_text().strip()
        if verdict_file.exists()
        else "invariants: ERROR no verdict"
    )
    print(f"reports: {settings.report_dir}/flash_sale.html, flash_sale_stats.csv")
    print(line)
    return code if code else (0 if line == "invariants: ok" else 2)


if __name__ == "__main__":
    sys.exit(main())
