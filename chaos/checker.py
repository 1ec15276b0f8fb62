"""The verdict after recovery: what the history, the gateway's stats and the supplier's order
log say about the invariants (SPEC §3.1, §3.2, §5a).

A check is a measured value against its bound; a scenario passes when every check does.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chaos.recorder import History, Op, Recorder


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    bound: str  # e.g. "== 0", "<= 20", ">= 99.9"
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "bound": self.bound, "passed": self.passed}


def measured(name: str, value: float) -> Check:
    """A figure reported without a bound: the contract promises nothing about it."""
    return Check(name, round(value, 4), "reported", True)


def at_most(name: str, value: float, limit: float) -> Check:
    return Check(name, round(value, 4), f"<= {limit:g}", value <= limit)


def at_least(name: str, value: float, limit: float) -> Check:
    return Check(name, round(value, 4), f">= {limit:g}", value >= limit)


def zero(name: str, value: float) -> Check:
    return Check(name, value, "== 0", value == 0)


def grants_by_key(history: History) -> dict[str, set[str]]:
    per_key: dict[str, set[str]] = defaultdict(set)
    for op in history.of("claim", "ok"):
        per_key[op.key].add(op.value)
    return per_key


def duplicate_grants(history: History) -> int:
    """Idempotency keys that earned two different vouchers, plus users holding two."""
    per_user: dict[str, set[str]] = defaultdict(set)
    for op in history.of("claim", "ok"):
        per_user[op.user].add(op.value)
    keys = sum(1 for codes in grants_by_key(history).values() if len(codes) > 1)
    return keys + sum(1 for codes in per_user.values() if len(codes) > 1)


def oversell(history: History, stats: dict[str, Any]) -> int:
    """Units of `stats`'s campaign granted beyond the stock ever added, by the gateway's count
    and by the distinct vouchers we were given."""
    campaign = stats["campaign_id"]
    seen = len({op.value for op in history.of("claim", "ok") if op.campaign == campaign})
    added = int(stats["stock_added"])
    return max(0, int(stats["granted"]) - added, seen - added)


def acked(history: History) -> dict[str, str]:
    """voucher code -> user, for every acknowledged grant."""
    return {op.value: op.user for op in history.of("claim", "ok")}


def delivered(history: History) -> set[str]:
    """Vouchers whose redemption was acknowledged as delivered."""
    codes = {op.key: op for op in history.of("redeem", "ok") if op.state == "delivered"}
    return {op.value for op in codes.values()}


async def probe_vouchers(recorder: Recorder, history: History) -> tuple[int, int]:
    """(acknowledged grants lost, acknowledged redemptions lost): see `probe_lost`."""
    lost, lost_redemptions = await probe_lost(recorder, history)
    return len(lost), lost_redemptions


def loss_window_s(history: History, lost: set[str], faults: list[float]) -> float:
    """How far back a fault took acknowledged grants (0 when nothing was lost): the longest
    time from a lost grant's request to the first fault after it was sent. Timed from the
    send, not the answer: an answer can arrive just after the fault that then takes the
    grant back, and Valkey decided somewhere in between, so this bounds the window above."""
    window = 0.0
    for op in history.of("claim", "ok"):
        if op.value in lost:
            later = [f for f in faults if f >= op.started]
            if later:
                window = max(window, min(later) - op.started)
    return window


async def probe_lost(recorder: Recorder, history: History) -> tuple[set[str], int]:
    """(voucher codes of acknowledged grants lost, acknowledged redemptions lost), by
    redeeming every voucher once more with a fresh key after recovery (merchant vouchers: no
    supplier involved).

    A lost grant answers 404 `voucher_not_found`; a lost redemption redeems again (200).
    """
    redeemed_users = {op.user for op in history.of("redeem", "ok") if op.state == "delivered"}
    owners = acked(history)
    gate = asyncio.Semaphore(32)

    async def one(code: str, user: str) -> tuple[bool, bool]:
        async with gate:
            op = await recorder.redeem(code, user)
        lost_grant = op.outcome == "refused" and op.code == "voucher_not_found"
        lost_redemption = user in redeemed_users and op.outcome == "ok"
        return lost_grant, lost_redemption

    codes = list(owners)
    results = await asyncio.gather(*(one(c, owners[c]) for c in codes))
    lost = {code for code, (gone, _) in zip(codes, results, strict=True) if gone}
    return lost, sum(r for _, r in results)


def double_deliveries(orders: Iterable[dict[str, Any]]) -> int:
    """Order ids or accounts (one voucher each) with more than one successful supplier order."""
    per_order: dict[str, int] = defaultdict(int)
    per_account: dict[str, int] = defaultdict(int)
    for order in orders:
        if order["status"] == "success":
            per_order[order["order_id"]] += 1
            per_account[order["account"]] += 1
    return sum(n > 1 for n in per_order.values()) + sum(n > 1 for n in per_account.values())


def recovery_s(history: History, fault_ended: float, kind: str = "claim") -> float:
    """Seconds from the end of the fault to the first acknowledged answer to a request sent
    after it (inf: none)."""
    ends = [op.started + op.took for op in history.of(kind, "ok") if op.started >= fault_ended]
    return min(ends) - fault_ended if ends else float("inf")


def hidden_grants(history: History) -> int:
    """Keys first answered `unknown` whose retry replayed a grant: the unknown had granted."""
    unknown = {op.key for op in history.of("claim", "unknown")}
    return sum(1 for op in history.of("claim", "ok") if op.replayed and op.key in unknown)


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def success_rate(ops: list[Op]) -> float:
    """Percent of requests answered ok (refusals that are business answers count as answered)."""
    if not ops:
        return 0.0
    good = sum(op.outcome == "ok" or op.code in ("sold_out", "limit_reached") for op in ops)
    return 100.0 * good / len(ops)


def median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values) if values else float("nan")


def tally(history: History) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for op in history.ops:
        counts[f"{op.kind} {op.outcome}"] += 1
    return dict(sorted(counts.items()))
