"""Run the flash-sale load test on a campaign of its own and print the invariant verdict.

    python -m loadtests.run                        # the spike (SPIKE_*), headless
    python -m loadtests.run --stock 500            # the run's campaign holds 500 units
    python -m loadtests.run -u 200 -r 50 -t 2m     # Locust's knobs instead of the spike
    python -m loadtests.run --web                  # Locust's web UI (http://127.0.0.1:8089)
    python -m loadtests.run --campaign my-sale     # an existing campaign, named on purpose

Every run creates its own voucher campaign through the admin API (`loadtest-<time>`, stock
from --stock, STOCK or 10 per spike user), so the demo's campaigns are never touched, and
pauses it when the run ends: a paused campaign answers nothing but `campaign_not_active`, and
its stats stay readable. Arguments this script does not know go to Locust as they are.

Reports land in loadtests/reports/ (flash_sale_*.csv, flash_sale.html, ledger-*.json,
verdict.txt). Exit code: Locust's (1 on request failures or an invariant breach), 2 when
nothing could be judged.
"""

from __future__ import annotations

import argparse
import os
import re
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
LOCUSTFILE = "loadtests/locustfile.py"
GRACE_S = 60.0  # start-up, stop-timeout and report writing on top of the plan
KNOBS = ("-u", "--users", "-r", "--spawn-rate", "-t", "--run-time")
_DURATION = re.compile(r"(\d+)\s*([hms])")


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
        return f"gateway not reachable at {settings.host} ({exc}); start it, e.g. `make run`"
    return None


def create_campaign(settings: Settings, stock: int) -> str:
    """PUT a new voucher campaign that is live now; returns its id."""
    campaign_id = f"loadtest-{int(time.time() * 1000)}"
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


def pause_campaign(settings: Settings, campaign_id: str) -> str | None:
    """Pause the run's campaign; None when done, else why not."""
    url = f"{settings.admin_url}/admin/campaigns/{campaign_id}/pause"
    try:
        _request(url, settings.admin_token, "POST", {})
    except (OSError, urllib.error.URLError) as exc:
        return f"could not pause campaign {campaign_id} ({exc}): pause it with POST {url}"
    return None


def clear_reports(report_dir: Path) -> None:
    """Drop the previous run's ledgers and verdict so they are not merged by mistake."""
    report_dir.mkdir(parents=True, exist_ok=True)
    for old in [*report_dir.glob("ledger-*.json"), report_dir / "verdict.txt"]:
        old.unlink(missing_ok=True)


def seconds(duration: str) -> float:
    """Locust's --run-time (`90`, `30s`, `2m`, `1h30m`) in seconds."""
    if duration.strip().isdigit():
        return float(duration)
    unit = {"h": 3600, "m": 60, "s": 1}
    return float(sum(int(n) * unit[u] for n, u in _DURATION.findall(duration)))


def locust_command(settings: Settings, extra: list[str], web: bool) -> list[str]:
    """Locust with locust.conf; the spike shape unless Locust's own knobs or the web UI rule."""
    locust = [sys.executable, "-m", "locust", "--host", settings.host]
    if web:  # not locust.conf: it is headless; the user sets users and rate in the page
        reports = ["--csv", str(settings.report_dir / "flash_sale")]
        reports += ["--html", str(settings.report_dir / "flash_sale.html")]
        return [*locust, "--locustfile", LOCUSTFILE, "--web-host", "127.0.0.1", *reports, *extra]
    cmd = [*locust, "--config", CONF]
    if any(arg.split("=")[0] in KNOBS for arg in extra):
        cmd += ["--locustfile", LOCUSTFILE]  # without the shape, which would override them
    return cmd + extra


def timeout_s(plan: SpikePlan, extra: list[str], web: bool) -> float | None:
    """How long Locust may run before it is killed; None (web UI): until Ctrl-C."""
    if web:
        return None
    for flag in ("-t", "--run-time"):
        for i, arg in enumerate(extra):
            if arg == flag and i + 1 < len(extra):
                return seconds(extra[i + 1]) + GRACE_S
            if arg.startswith(flag + "="):
                return seconds(arg.split("=", 1)[1]) + GRACE_S
    return plan.total_s + GRACE_S


def run_locust(cmd: list[str], env: dict[str, str], limit_s: float | None) -> int:
    """Run Locust; killed if it outlives `limit_s`. Ctrl-C reaches Locust too: it is given
    time to stop its users and write the ledger and verdict."""
    process = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        return process.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        print(f"locust still running after {limit_s:.0f} s: killed", file=sys.stderr)
        process.kill()
        process.wait()
        return 2
    except KeyboardInterrupt:
        try:
            return process.wait(timeout=GRACE_S) or 1
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
            return 1


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--stock",
        "--fresh-stock",
        type=int,
        metavar="N",
        help="stock of the run's campaign (default: STOCK, else 10 per spike user)",
    )
    parser.add_argument(
        "--campaign",
        metavar="ID",
        help="run against this existing campaign instead of creating one (never paused)",
    )
    parser.add_argument("--web", action="store_true", help="Locust's web UI instead of headless")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Set up, run, report, pause the run's campaign; returns the exit code."""
    args, extra = parse(argv)
    env = dict(os.environ)
    settings, plan = Settings.from_env(env), SpikePlan.from_env(env)
    if why := reachable(settings):
        print(f"invariants: ERROR {why}")
        return 2
    created = args.campaign is None
    if created and env.get("CAMPAIGN"):
        print(f"CAMPAIGN={env['CAMPAIGN']} ignored: --campaign ID runs against an existing one")
    if created:
        stock = args.stock if args.stock is not None else settings.campaign_stock(plan)
        env["CAMPAIGN"] = create_campaign(settings, stock)
        env["PER_DEVICE_LIMIT"] = str(settings.per_device_limit or 1)
        print(f"campaign {env['CAMPAIGN']} created for this run, stock {stock}", flush=True)
    else:
        env["CAMPAIGN"] = args.campaign
    clear_reports(settings.report_dir)
    cmd = locust_command(settings, extra, args.web)
    if args.web:
        print("Locust web UI: http://127.0.0.1:8089 (Ctrl-C here ends the run)", flush=True)
    elif extra:
        print(f"locust {' '.join(extra)} against {settings.host}", flush=True)
    else:
        print(
            f"spike: {plan.users} users, {plan.total_s:.0f} s, against {settings.host}", flush=True
        )
    try:
        code = run_locust(cmd, env, timeout_s(plan, extra, args.web))
    finally:
        if created:
            why = pause_campaign(settings, env["CAMPAIGN"])
            print(why or f"campaign {env['CAMPAIGN']} paused (its stats stay readable)")
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
