"""The report benchmark: each backend report over HTTP on a SQLite ledger of 1,000,000 claims.

    python -m bench.reports                  # 1,000,000 claims (several minutes to build)
    python -m bench.reports --claims 100000  # a smaller ledger

The ledger is built through the real ingest code: stream entries shaped as the gateway's
scripts write them (claims granted and refused over 8 campaigns and 3 clients, risk hits,
redemptions reserved and delivered through 3 suppliers, some vouchers frozen or revoked) are
committed with backend/ledger.py's `write_batch` straight into a fresh SQLite file (no Valkey:
reading the streams is what bench/ingest.py measures). Then the backend app (backend/app.py,
without its ingest task) serves the file on a local port and each report is asked `--repeat`
times over HTTP; its slowest answer is held to the bar (< 1 s). Prints one JSON document and
writes it to bench/last-reports.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import socket
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from backend import db
from backend.app import create_app
from backend.ledger import write_batch
from gateway.codes import ClaimIds, code_key, mask_code, voucher_code_for
from gateway.settings import data_key_bytes, load
from gateway.valkey import keys

BENCH = Path(__file__).resolve().parent
BAR_S = 1.0
CAMPAIGNS = [f"flash-{i}" for i in range(8)]
CLIENTS = ("bench", "app", "web")
SUPPLIERS = ("sim-a", "sim-b", "sim-c")
REFUSALS = ("sold_out", "sold_out", "sold_out", "limit_reached", "rate_limited", "risk_denied")
START_MS = int(datetime(2026, 11, 11, 10, tzinfo=UTC).timestamp() * 1000)
BATCH = 5000


def _ts(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


class Ledger:
    """Entries per stream, in stream order, flushed through write_batch in batches."""

    def __init__(self, url: str) -> None:
        self.engine = db.create_engine(url)
        self.pending: dict[str, list[tuple[str, dict[bytes, bytes]]]] = {}
        self.seq: dict[str, int] = {}
        self.events = 0

    async def add(self, campaign_id: str, ms: int, fields: dict[str, str]) -> None:
        stream = keys.events(keys.shard_tag(campaign_id))
        n = self.seq[stream] = self.seq.get(stream, 0) + 1
        raw = {k.encode(): v.encode() for k, v in fields.items()}
        raw[b"ts"] = _ts(ms).encode()
        self.pending.setdefault(stream, []).append((f"{ms}-{n}", raw))
        if len(self.pending[stream]) >= BATCH:
            await self.flush(stream)

    async def flush(self, stream: str) -> None:
        entries = self.pending.pop(stream, [])
        if entries:
            await write_batch(self.engine, stream, entries)
            self.events += len(entries)

    async def close(self) -> None:
        for stream in list(self.pending):
            await self.flush(stream)
        await self.engine.dispose()


class Probes:
    """What the timed requests ask for: ids and codes that exist in the ledger built."""

    def __init__(self) -> None:
        self.user = ""
        self.user_events = 0
        self.code = ""
        self.campaign = CAMPAIGNS[0]
        self.day = _ts(START_MS)[:10]


async def build(url: str, claims: int, seed: int = 7) -> tuple[dict[str, Any], Probes]:
    """The ledger: `claims` claims (about 60 % granted) and what follows them."""
    rng = random.Random(seed)
    ledger = Ledger(url)
    await db.migrate(ledger.engine)
    probes = Probes()
    data_key = data_key_bytes(load(BENCH / "gateway.toml", env={}).security.data_key)
    key, claim_ids = code_key(data_key), ClaimIds(data_key)  # as the bench gateway's
    users = max(1, claims // 5)
    # Stock: the first campaign (the probed one) sells out, so its sell-out query runs.
    stock = {c: claims // 12 if c == CAMPAIGNS[0] else claims for c in CAMPAIGNS}
    granted = dict.fromkeys(CAMPAIGNS, 0)
    per_user: dict[str, int] = {}
    for i, campaign_id in enumerate(CAMPAIGNS):
        await ledger.add(
            campaign_id,
            START_MS - 60_000 + i,
            {
                "type": "campaign.created",
                "campaign_id": campaign_id,
                "actor": "ops",
                "actor_ip": "10.1.0.1",
                "stock": str(stock[campaign_id]),
                "name": f"Flash sale {i}",
                "starts_ms": str(START_MS),
                "voucher_ttl_s": str(86_400 * (1 + i % 3)),
                "unit_cost": str(100 + i),
                "currency": "CNY",
            },
        )
    started = time.perf_counter()
    for n in range(claims):
        ms = START_MS + n * 7  # two hours of flash sales for 1,000,000 claims
        campaign_id = CAMPAIGNS[min(7, int(rng.paretovariate(1.2)) - 1)]
        user_id = f"user-{rng.randrange(users)}"
        client_id = CLIENTS[n % 3]
        common = {
            "campaign_id": campaign_id,
            "user_id": user_id,
            "device_id": f"dev-{user_id[5:]}",
            "ip": f"10.{n % 251}.{n % 239}.{n % 233}",
            "request_id": f"req-{n}",
            "client_id": client_id,
        }
        per_user[user_id] = per_user.get(user_id, 0) + 1
        if n % 20 == 0:
            rules = "velocity" if n % 40 else "velocity,device_farm"
            decision = "shadow" if n % 60 else "deny"
            hit = {"type": "risk.hit", "rules": rules, "decision": decision}
            await ledger.add(campaign_id, ms, common | hit)
            per_user[user_id] += 1
        if granted[campaign_id] >= stock[campaign_id] or n % 10 >= 6:
            code = "sold_out" if granted[campaign_id] >= stock[campaign_id] else REFUSALS[n % 6]
            await ledger.add(campaign_id, ms, common | {"type": "claim.rejected", "code": code})
            continue
        granted[campaign_id] += 1
        tag = keys.shard_tag(campaign_id)
        code = voucher_code_for(tag, key, client_id, campaign_id, f"idem-{n}")
        voucher = {"voucher_code": mask_code(code), "claim_id": claim_ids.of(code)}
        await ledger.add(campaign_id, ms, common | voucher | {"type": "claim.granted"})
        later = ms + 60_000 + n % 600_000
        if n % 10 < 3:  # redeemed: reserved, then delivered by a supplier
            if not probes.code:  # a voucher with a life: its audit shows all of it
                probes.code = code
            life = common | voucher | {"redemption_id": f"rdm-{n}", "kind": "card"}
            await ledger.add(campaign_id, later, life | {"type": "redemption.reserved"})
            supplier = SUPPLIERS[n % 3]
            await ledger.add(
                campaign_id,
                later + 1,
                life | {"type": "redemption.delivered", "supplier": supplier},
            )
            # The pool's own record of the call (a ledger that projects it counts it).
            call = {
                "type": "supplier.call",
                "supplier": supplier,
                "op": "place",
                "outcome": "ok" if n % 50 else "timeout",
                "redemption_id": f"rdm-{n}",
                "failover": "1" if n % 50 == 0 else "0",
                "latency_ms": str(20 + n % 180),
            }
            await ledger.add(campaign_id, later + 1, call)
            per_user[user_id] += 2
        elif n % 100 == 3:
            frozen = {"type": "voucher.frozen", "actor": "ops", "actor_ip": "10.1.0.1"}
            await ledger.add(campaign_id, later, common | voucher | frozen)
        elif n % 200 == 5:
            revoked = {"type": "voucher.revoked", "actor": "ops", "actor_ip": "10.1.0.1"}
            await ledger.add(campaign_id, later, common | voucher | revoked | {"returned": "1"})
    await ledger.close()
    seconds = time.perf_counter() - started
    probes.user, probes.user_events = max(per_user.items(), key=lambda kv: kv[1])
    probes.campaign = CAMPAIGNS[0]
    built = {
        "claims": claims,
        "events": ledger.events,
        "granted": sum(granted.values()),
        "build_seconds": round(seconds, 1),
        "build_events_per_s": int(ledger.events / seconds) if seconds else None,
    }
    return built, probes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def time_reports(url: str, probes: Probes, repeat: int) -> dict[str, Any]:
    """Each report `repeat` times over HTTP against the backend app; seconds per answer."""
    settings = load(BENCH / "gateway.toml", env={})
    admin = {"Authorization": f"Bearer {settings.admin.operators[0].token}"}
    client = {"Authorization": f"Bearer {settings.clients[0].api_key}"}
    requests = {
        "overview": ("/reports/overview", admin),
        "campaign": (f"/reports/campaigns/{probes.campaign}", admin),
        "suppliers": ("/reports/suppliers", admin),
        "suppliers_day": (f"/reports/suppliers?day={probes.day}", admin),
        "audit_user": (f"/audit?user={probes.user}", admin),
        "audit_voucher": (f"/audit?voucher={probes.code}", admin),
        "audit_campaign": (f"/audit?campaign={probes.campaign}", admin),
        "wallet": (f"/v1/users/{probes.user}/vouchers", client),
    }
    # The Valkey URL is never dialled: without its ingest task the app reads the ledger only.
    app = create_app(settings, "redis://127.0.0.1:1/0", url, ingest=None)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    out: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            for name, (path, headers) in requests.items():
                seconds, size = [], 0
                for _ in range(repeat):
                    started = time.perf_counter()
                    async with session.get(path, headers=headers) as response:
                        body = await response.read()
                        if response.status != 200:
                            raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
                    seconds.append(time.perf_counter() - started)
                    size = len(body)
                out[name] = {
                    "path": path,
                    "bytes": size,
                    "first_s": round(seconds[0], 4),
                    "median_s": round(sorted(seconds)[len(seconds) // 2], 4),
                    "max_s": round(max(seconds), 4),
                }
    finally:
        await runner.cleanup()
    return out


async def run(claims: int, repeat: int, ledger: Path | None = None) -> dict[str, Any]:
    """Build the ledger (or reuse `ledger` if a run kept it there) and time every report."""
    work = Path(tempfile.mkdtemp(prefix="bench-reports-"))
    path = ledger or work / "ledger.db"
    kept = path.with_suffix(".json")
    url = db.async_url(f"sqlite:///{path}", work)
    try:
        if ledger is not None and path.exists() and kept.exists():
            saved = json.loads(kept.read_text())
            built, probes = saved["ledger"], Probes()
            probes.__dict__.update(saved["probes"])
        else:
            built, probes = await build(url, claims)
            if ledger is not None:
                kept.write_text(json.dumps({"ledger": built, "probes": probes.__dict__}))
        reports = await time_reports(url, probes, repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    slowest = max(r["max_s"] for r in reports.values())
    return {
        "ledger": built | {"database": "sqlite", "audit_user_events": probes.user_events},
        "reports": reports,
        "slowest_report_s": slowest,
        "bar_s": BAR_S,
        "bar_met": slowest < BAR_S,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="requests per report")
    parser.add_argument("--out", type=Path, default=BENCH / "last-reports.json")
    parser.add_argument(
        "--ledger",
        type=Path,
        default=None,
        help="keep the ledger in this SQLite file; a later run reuses it instead of building",
    )
    args = parser.parse_args()
    result = asyncio.run(run(args.claims, args.repeat, args.ledger))
    text = json.dumps(result, indent=2)
    print(text)
    args.out.write_text(text + "\n")
    for name, r in result["reports"].items():
        print(f"{name:<16} {r['max_s'] * 1000:>9.1f} ms max  {r['path']}")
    print(f"reports < {BAR_S} s each: {'met' if result['bar_met'] else 'MISSED'}")


if __name__ == "__main__":
    main()
