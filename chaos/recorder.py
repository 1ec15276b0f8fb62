"""The recording client: every request's outcome, as Jepsen's clients record theirs.

An answer is `ok` (201 claim with its voucher code, 200/202 redemption with its id), `refused`
(a definite no, with its code) or `unknown` (timeout, connection error, 5xx, or a 503 saying
`Outcome-Unknown: true`): the request may or may not have been carried out. A good client
retries an unknown with the same Idempotency-Key until it gets a definite answer, and so does
this one; every attempt is logged, and the checker reads the log after recovery.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from chaos.rig import ADMIN_TOKEN, API_KEY

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PUBLIC = {"Authorization": f"Bearer {API_KEY}"}
VOUCHER = {"kind": "voucher"}
RECHARGE = {"kind": "direct_recharge", "sku": "topup-10", "suppliers": ["alpha", "beta"]}
# 503 without Outcome-Unknown (refused before Valkey, shed, suppliers down) changed nothing.
RETRYABLE = {"unavailable", "overloaded", "request_in_progress", "suppliers_unavailable"}


@dataclass
class Op:
    """One HTTP attempt: what was asked, when, and what came back."""

    kind: str  # "claim" | "redeem"
    key: str  # Idempotency-Key
    user: str
    started: float  # monotonic
    took: float
    outcome: str  # "ok" | "refused" | "unknown"
    status: int = 0
    code: str = ""  # error code, or "timeout" / "connection"
    value: str = ""  # voucher code (claim) or redemption id (redeem)
    state: str = ""  # redemption status: delivered | pending | failed
    outcome_unknown_header: bool = False
    replayed: bool = False  # Idempotent-Replayed: the first decision, answered again
    campaign: str = ""


@dataclass
class History:
    """Every attempt of a run, in completion order."""

    ops: list[Op] = field(default_factory=list)

    def of(self, kind: str, outcome: str | None = None) -> list[Op]:
        return [o for o in self.ops if o.kind == kind and (outcome is None or o.outcome == outcome)]


def ip_of(user: str) -> str:
    """A stable documentation-range address per user (the gateway trusts 127.0.0.1 as proxy)."""
    n = zlib.crc32(user.encode()) & 0xFFFF
    return f"198.18.{n >> 8}.{n & 255}"


def classify(status: int, body: Any, headers: Any) -> tuple[str, str]:
    code = body.get("error", {}).get("code", "") if isinstance(body, dict) else ""
    if status in (200, 201, 202):
        return "ok", ""
    if status >= 500 and (headers.get("Outcome-Unknown") == "true" or not code):
        return "unknown", code or str(status)
    return "refused", code


class Recorder:
    """Claims and redemptions against one gateway, logged into `history`."""

    def __init__(self, public: str, timeout_s: float = 3.0, retry_for_s: float = 30.0) -> None:
        self.public = public
        self.history = History()
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.retry_for_s = retry_for_s
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Recorder:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True), timeout=self.timeout
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def attempt(self, kind: str, path: str, body: dict[str, Any], key: str) -> Op:
        assert self.session is not None
        user = str(body["user_id"])
        headers = {**PUBLIC, "Idempotency-Key": key, "X-Forwarded-For": ip_of(user)}
        started = time.monotonic()
        campaign = path.split("/")[3] if kind == "claim" else ""
        op = Op(kind, key, user, started, 0.0, "unknown", campaign=campaign)
        try:
            async with self.session.post(self.public + path, json=body, headers=headers) as r:
                answer = await r.json(content_type=None)
                op.status = r.status
                op.outcome, op.code = classify(r.status, answer, r.headers)
                op.outcome_unknown_header = r.headers.get("Outcome-Unknown") == "true"
                op.replayed = r.headers.get("Idempotent-Replayed") == "true"
        except TimeoutError:
            op.code = "timeout"
        except (aiohttp.ClientError, ValueError):
            op.code = "connection"
        op.took = time.monotonic() - started
        if op.outcome == "ok":
            if kind == "claim":
                op.value = str(answer["voucher"]["code"])
            else:
                op.value, op.state = str(answer["redemption_id"]), str(answer["status"])
        self.history.ops.append(op)
        return op

    async def until_definite(self, kind: str, path: str, body: dict[str, Any], key: str) -> Op:
        """Retry unknowns (and retryable refusals) with the same key, within `retry_for_s`."""
        deadline = time.monotonic() + self.retry_for_s
        while True:
            op = await self.attempt(kind, path, body, key)
            definite = op.outcome == "ok" or (op.outcome == "refused" and op.code not in RETRYABLE)
            if definite or time.monotonic() > deadline:
                return op
            await asyncio.sleep(0.05 + random.random() * 0.1)

    async def claim(self, campaign: str, user: str, key: str | None = None) -> Op:
        body = {"user_id": user, "device_id": f"dev-{user}"}
        path = f"/v1/campaigns/{campaign}/claims"
        return await self.until_definite("claim", path, body, key or uuid.uuid4().hex)

    async def redeem(self, code: str, user: str, key: str | None = None) -> Op:
        body = {"voucher_code": code, "user_id": user, "device_id": f"dev-{user}", "account": code}
        return await self.until_definite("redeem", "/v1/redemptions", body, key or uuid.uuid4().hex)


@dataclass
class Load:
    """Steady load: `clients` loops, each claiming for fresh users and redeeming a share;
    `scarce_share` of the claims go to `scarce`, a campaign meant to sell out mid-fault."""

    campaign: str
    scarce: str = ""
    scarce_share: float = 0.2
    clients: int = 16
    redeem_share: float = 0.5
    pause_s: float = 0.01
    max_requests: int = 1_000_000


async def steady_load(
    recorder: Recorder, load: Load, stop: asyncio.Event, on_op: Callable[[Op], None] | None = None
) -> None:
    """Run `load` until `stop` is set or `max_requests` attempts were made."""
    rng = random.Random(1)

    async def client(n: int) -> None:
        i = 0
        while not stop.is_set() and len(recorder.history.ops) < load.max_requests:
            user = f"c{n}-{i}-{uuid.uuid4().hex[:6]}"
            i += 1
            scarce = load.scarce and rng.random() < load.scarce_share
            op = await recorder.claim(load.scarce if scarce else load.campaign, user)
            if on_op:
                on_op(op)
            if op.outcome == "ok" and rng.random() < load.redeem_share and not stop.is_set():
                redeemed = await recorder.redeem(op.value, user)
                if on_op:
                    on_op(redeemed)
            await asyncio.sleep(load.pause_s)

    await asyncio.gather(*(client(n) for n in range(load.clients)))


# -- admin and simulator calls (not recorded: they set the stage and read the verdict) --------


async def admin(
    session: aiohttp.ClientSession, base: str, method: str, path: str, body: Any = None
) -> Any:
    async with session.request(method, base + path, json=body, headers=ADMIN) as response:
        answer = await response.json(content_type=None)
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {answer}")
        return answer


async def put_campaign(
    admin_base: str, campaign: str, stock: int, benefit: dict[str, Any] | None = None
) -> None:
    body = {
        "name": campaign,
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": "2099-01-01T00:00:00Z",
        "stock": stock,
        "per_user_limit": 1,
        "voucher_ttl_s": 86_400,
        "benefit": benefit or VOUCHER,
    }
    async with aiohttp.ClientSession() as session:
        await admin(session, admin_base, "PUT", f"/admin/campaigns/{campaign}", body)


async def stats(admin_base: str, campaign: str, retry_for_s: float = 15.0) -> dict[str, Any]:
    """The campaign's admin stats, retried while the gateway recovers."""
    deadline = time.monotonic() + retry_for_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
        while True:
            try:
                return dict(
                    await admin(session, admin_base, "GET", f"/admin/campaigns/{campaign}/stats")
                )
            except (aiohttp.ClientError, RuntimeError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


async def sim(base: str, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, base + path, json=body) as response,
    ):
        return await response.json(content_type=None) if response.status != 204 else None
