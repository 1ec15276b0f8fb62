"""`gateway preflight CAMPAIGN.toml`: rehearse a campaign's flash sale before it goes live.

Starts a scratch gateway (embedded Valkey in a temporary directory, the campaign's own limits
and rules), creates the campaign from its file, fires the spike the file describes (honest users,
retries with the same key, scalpers sharing devices), and prints one screen: sell-out time,
latency percentiles, answers by code, and the invariants read back from the admin API.
Nothing touches a real deployment.
"""

from __future__ import annotations

import asyncio
import collections
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import orjson

from gateway.settings import ConfigError

API_KEY = "preflight-key"
ADMIN_TOKEN = "preflight-admin"


class Spike(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    users: int = 5000  # distinct end users in the spike
    concurrency: int = 200  # requests in flight at once
    retry_ratio: float = 0.1  # share of honest users who retry with the same key
    scalpers: int = 20  # scripted users, each cycling many user ids over a few devices
    scalper_accounts: int = 25
    workers: int = 2


class Benefit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kind: str = "voucher"
    sku: str = ""
    suppliers: list[str] = []


class Campaign(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    stock: int
    name: str = ""
    per_user_limit: int = 1
    per_device_limit: int = 0
    voucher_ttl_s: int = 30 * 86400
    duration_s: int = 3600
    benefit: Benefit = Benefit()


class Rehearsal(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    campaign: Campaign
    spike: Spike = Spike()
    limits: dict[str, Any] = {}
    risk: dict[str, Any] = {}


def load_rehearsal(path: str) -> Rehearsal:
    """The campaign file, or ConfigError naming the bad key."""
    try:
        return msgspec.toml.decode(Path(path).read_bytes(), type=Rehearsal)
    except (OSError, msgspec.DecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _gateway_toml(rehearsal: Rehearsal, port: int, admin_port: int, data_dir: Path) -> str:
    lines = [
        "[server]",
        'host = "127.0.0.1"',
        f"port = {port}",
        f"admin_port = {admin_port}",
        f"workers = {rehearsal.spike.workers}",
        "[redis]",
        'url = "embedded"',
        f'data_dir = "{data_dir}"',
        "[admin]",
        f'token = "{ADMIN_TOKEN}"',
        "[[clients]]",
        'id = "preflight"',
        f'api_key = "{API_KEY}"',
    ]
    if rehearsal.limits:
        lines.append("[limits]")
        for route, items in rehearsal.limits.items():
            rendered = ", ".join(
                "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in item.items()) + "}"
                for item in items
            )
            lines.append(f"{route} = [{rendered}]")
    for rule in rehearsal.risk.get("rules", []):
        lines.append("[[risk.rules]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in rule.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return orjson.dumps(value).decode()  # a JSON string is a TOML basic string
    return str(value)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("scratch gateway did not become ready")


class Spiker:
    """Fires the spike and records every answer."""

    def __init__(self, rehearsal: Rehearsal, public: str) -> None:
        self.rehearsal = rehearsal
        self.url = f"{public}/v1/campaigns/{rehearsal.campaign.id}/claims"
        self.codes: collections.Counter[str] = collections.Counter()
        self.latencies: list[float] = []
        self.granted: dict[str, list[str]] = collections.defaultdict(list)  # user -> claim ids
        self.by_key: dict[str, set[str]] = collections.defaultdict(set)
        self.sold_out_at: float | None = None
        self.started = 0.0

    def requests(self) -> list[tuple[str, str, str]]:
        """(user, device, key) per request: honest users, their retries, and scalpers."""
        spike, rng = self.rehearsal.spike, random.Random(7)
        plan = []
        for i in range(spike.users):
            plan.append((f"user-{i}", f"device-{i}", f"key-{i}"))
            if rng.random() < spike.retry_ratio:
                plan.append((f"user-{i}", f"device-{i}", f"key-{i}"))
        for s in range(spike.scalpers):
            for a in range(spike.scalper_accounts):
                plan.append((f"scalper-{s}-{a}", f"scalper-device-{s % 3}", f"sk-{s}-{a}"))
        rng.shuffle(plan)
        return plan

    async def _one(self, session: aiohttp.ClientSession, user: str, device: str, key: str) -> None:
        sent = time.perf_counter()
        async with session.post(
            self.url,
            json={"user_id": user, "device_id": device},
            headers={"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": key},
        ) as response:
            body = await response.json(content_type=None)
        self.latencies.append(time.perf_counter() - sent)
        if response.status == 201:
            replayed = response.headers.get("Idempotent-Replayed") == "true"
            self.codes["replayed" if replayed else "granted"] += 1
            self.granted[user].append(body["claim_id"])
            self.by_key[key].add(body["claim_id"])
            return
        code = body.get("error", {}).get("code", str(response.status))
        self.codes[code] += 1
        if code == "sold_out" and self.sold_out_at is None:
            self.sold_out_at = time.perf_counter() - self.started

    async def run(self) -> float:
        plan = self.requests()
        queue: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        for item in plan:
            queue.put_nowait(item)
        connector = aiohttp.TCPConnector(limit=self.rehearsal.spike.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                while not queue.empty():
                    await self._one(session, *queue.get_nowait())

            self.started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(self.rehearsal.spike.concurrency)))
        return time.perf_counter() - self.started


async def _create_campaign(rehearsal: Rehearsal, admin: str) -> None:
    campaign = rehearsal.campaign
    now = datetime.now(UTC)
    body = {
        "name": campaign.name or campaign.id,
        "starts_at": (now - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ends_at": (now + timedelta(seconds=campaign.duration_s)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "stock": campaign.stock,
        "per_user_limit": campaign.per_user_limit,
        "per_device_limit": campaign.per_device_limit,
        "voucher_ttl_s": campaign.voucher_ttl_s,
        "benefit": msgspec.to_builtins(campaign.benefit),
    }
    async with (
        aiohttp.ClientSession() as session,
        session.put(
            f"{admin}/admin/campaigns/{campaign.id}",
            json=body,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response,
    ):
        if response.status not in (200, 201):
            raise RuntimeError(f"campaign rejected: {await response.text()}")


async def _stats(rehearsal: Rehearsal, admin: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{admin}/admin/campaigns/{rehearsal.campaign.id}/stats",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response,
    ):
        return dict(await response.json())


def invariants(rehearsal: Rehearsal, spiker: Spiker, stats: dict[str, Any]) -> list[str]:
    """Every breach found; an empty list means the rehearsal held every promise."""
    breaches = []
    if stats["granted"] > stats["stock_added"]:
        breaches.append(f"oversold: {stats['granted']} grants for {stats['stock_added']} stock")
    if stats["granted"] != stats["stock_added"] - stats["stock_left"]:
        breaches.append("granted != stock_added - stock_left")
    distinct = {c for ids in spiker.granted.values() for c in ids}
    if len(distinct) != stats["granted"]:
        breaches.append(f"{len(distinct)} distinct grants seen, stats say {stats['granted']}")
    allowance = rehearsal.campaign.per_user_limit
    over = [u for u, ids in spiker.granted.items() if len(set(ids)) > allowance]
    if over:
        breaches.append(f"{len(over)} users over their allowance")
    if any(len(ids) > 1 for ids in spiker.by_key.values()):
        breaches.append("an Idempotency-Key got two different claims")
    return breaches


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def report(rehearsal: Rehearsal, spiker: Spiker, elapsed: float, stats: dict[str, Any]) -> int:
    """Print the one-screen report; 0 when every invariant held."""
    breaches = invariants(rehearsal, spiker, stats)
    total = sum(spiker.codes.values())
    sold_out = f"{spiker.sold_out_at:.2f} s" if spiker.sold_out_at is not None else "not sold out"
    print(
        f"preflight: campaign {rehearsal.campaign.id!r}, stock {rehearsal.campaign.stock}, "
        f"{rehearsal.spike.workers} workers"
    )
    print(
        f"  requests      {total} in {elapsed:.2f} s ({total / elapsed:.0f}/s), "
        f"concurrency {rehearsal.spike.concurrency}"
    )
    print(f"  sell-out      {sold_out}")
    print(
        f"  latency       p50 {_percentile(spiker.latencies, 0.5):.1f} ms   "
        f"p99 {_percentile(spiker.latencies, 0.99):.1f} ms"
    )
    print("  answers       " + ", ".join(f"{k} {v}" for k, v in spiker.codes.most_common()))
    print(
        f"  stats         granted {stats['granted']}, left {stats['stock_left']}, "
        f"rejected in Redis {stats['rejected']}"
    )
    print("  invariants    " + ("ok" if not breaches else "BREACH: " + "; ".join(breaches)))
    return 0 if not breaches else 1


def run_preflight(path: str) -> int:
    """Rehearse the campaign in `path` on a scratch gateway; exit 0 when invariants hold."""
    rehearsal = load_rehearsal(path)
    scratch = Path(tempfile.mkdtemp(prefix="gateway-preflight-"))
    port, admin_port = _free_port(), _free_port()
    config = scratch / "gateway.toml"
    config.write_text(_gateway_toml(rehearsal, port, admin_port, scratch / "var"))
    public, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(public)

        async def rehearse() -> int:
            await _create_campaign(rehearsal, admin)
            spiker = Spiker(rehearsal, public)
            elapsed = await spiker.run()
            return report(rehearsal, spiker, elapsed, await _stats(rehearsal, admin))

        return asyncio.run(rehearse())
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(scratch, ignore_errors=True)
