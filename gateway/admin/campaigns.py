"""Reading campaigns back: their public view (cached up to 0.5 s) and their stats."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gateway.admin import periods
from gateway.models import CampaignView
from gateway.timefmt import rfc3339_s
from gateway.valkey import keys
from gateway.valkey.calls import redis_call

CACHE_S = 0.5
# A campaign hash holds these fields, those of OPTIONAL_FIELDS it was given, and one allowance
# per claimant (keys.allowance_field, written by lua/claim.lua): it is read by name (HMGET),
# never whole.
FIELDS = (
    # configuration (lua/admin_campaign.lua)
    "name",
    "starts_ms",
    "ends_ms",
    "per_user_limit",
    "per_device_limit",
    "voucher_ttl_s",
    "kind",
    "sku",
    "suppliers",
    # state and counters (admin_state, admin_stock, claim, redeem and redeem_settle scripts)
    "paused",
    "stock_added",
    "stock_left",
    "granted",
    "redeemed",
)
# Configuration a campaign may lack (lua/admin_campaign.lua removes one left out of a PUT).
OPTIONAL_FIELDS = (
    "unit_cost",
    "currency",
    "daily_stock",
    "daily_rollover",
    "timezone",
    "per_user_daily_limit",
    "budget",
    "periods",
)
# Counters only some campaigns have: grants today (`day,count`, lua/claim.lua, with
# daily_stock) and units given back by revokes.
PERIOD_COUNTERS = ("today", "returned")
VIEW_FIELDS = ("starts_ms", "ends_ms", "paused", "stock_left")
# Counters lua/voucher_revoke.lua keeps, absent until the campaign's first revoke: vouchers
# revoked, and those of them whose unit went back to stock.
REVOKE_FIELDS = ("revoked", "returned")


def campaign_state(fields: dict[str, str], now_ms: int) -> str:
    """scheduled | active | paused | ended | sold_out; a pause wins over sold out."""
    if fields.get("paused") == "1":
        return "paused"
    if now_ms < int(fields["starts_ms"]):
        return "scheduled"
    if now_ms >= int(fields["ends_ms"]):
        return "ended"
    if int(fields["stock_left"]) <= 0:
        return "sold_out"
    return "active"


def _text(raw: dict[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


async def load_campaign(
    redis: Any, campaign_id: str, fields: tuple[str, ...] = FIELDS + OPTIONAL_FIELDS
) -> dict[str, str] | None:
    """The campaign's stored `fields` (those it has), as text; None when there is no such
    campaign."""
    tag = keys.shard_tag(campaign_id)
    values = await redis_call("campaign_read", redis.hmget(keys.campaign(tag, campaign_id), fields))
    found = {name: value for name, value in zip(fields, values, strict=True) if value is not None}
    return _text(found) if found else None


class CampaignViews:
    """GET /v1/campaigns/{id}: a per-worker cache so a spike of reads costs Redis little."""

    def __init__(self, redis: Any, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._clock = clock
        self._cache: dict[str, tuple[float, CampaignView | None]] = {}

    async def get(self, campaign_id: str) -> CampaignView | None:
        now = self._clock()
        hit = self._cache.get(campaign_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        fields = await load_campaign(self._redis, campaign_id, VIEW_FIELDS)
        view = None
        if fields is not None:
            view = CampaignView(
                campaign_id=campaign_id,
                state=campaign_state(fields, int(now * 1000)),
                starts_at=rfc3339_s(int(fields["starts_ms"])),
                ends_at=rfc3339_s(int(fields["ends_ms"])),
                stock_left=int(fields["stock_left"]),
            )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[campaign_id] = (now + CACHE_S, view)
        return view


async def campaign_stats(
    redis: Any, campaign_id: str, now_ms: int | None = None
) -> dict[str, Any] | None:
    """The admin stats document at `now_ms` (default: now); None when there is no such
    campaign."""
    tag = keys.shard_tag(campaign_id)
    wanted = FIELDS + OPTIONAL_FIELDS + REVOKE_FIELDS + PERIOD_COUNTERS
    fields = await load_campaign(redis, campaign_id, tuple(dict.fromkeys(wanted)))
    if fields is None:
        return None
    rejected = _text(await redis_call("stats", redis.hgetall(keys.rejections(tag, campaign_id))))
    document: dict[str, Any] = {
        "campaign_id": campaign_id,
        "stock_added": int(fields["stock_added"]),
        "stock_left": int(fields["stock_left"]),
        "granted": int(fields["granted"]),
        "redeemed": int(fields["redeemed"]),
        "revoked": int(fields.get("revoked", 0)),
        "returned": int(fields.get("returned", 0)),
        "rejected": {code: int(n) for code, n in sorted(rejected.items())},
    }
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return document | period_stats(fields, now_ms)


def period_stats(fields: dict[str, str], now_ms: int) -> dict[str, Any]:
    """`today` when the campaign has a daily_stock; `budget_spent` and `budget_left` when it
    has a budget (spent: the units granted and not given back, at today's unit_cost)."""
    stats: dict[str, Any] = {}
    kept = int(fields["granted"]) - int(fields.get("returned", 0))
    if "daily_stock" in fields:
        tz = periods.zone(fields.get("timezone", "UTC"))
        day = periods.local_day(tz, now_ms)
        stored_day, _, count = fields.get("today", "0,0").partition(",")
        granted_today = int(count) if int(stored_day) >= day else 0
        daily = int(fields["daily_stock"])
        if fields.get("daily_rollover") == "1":
            first = periods.local_day(tz, int(fields["starts_ms"]))
            quota = daily * max(0, day - first + 1) - kept
        else:
            quota = daily - granted_today
        left = max(0, min(quota, int(fields["stock_left"])))
        stats["today"] = {"granted": granted_today, "daily_stock_left": left}
    if "budget" in fields:
        spent = kept * int(fields.get("unit_cost", 0))
        stats["budget_spent"] = spent
        stats["budget_left"] = max(0, int(fields["budget"]) - spent)
    return stats
