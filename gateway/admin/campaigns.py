"""Reading campaigns back: their public view (cached up to 0.5 s) and their stats."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

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
OPTIONAL_FIELDS = ("unit_cost", "currency")
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


async def campaign_stats(redis: Any, campaign_id: str) -> dict[str, Any] | None:
    """The admin stats document; None when there is no such campaign."""
    tag = keys.shard_tag(campaign_id)
    fields = await load_campaign(redis, campaign_id, FIELDS + OPTIONAL_FIELDS + REVOKE_FIELDS)
    if fields is None:
        return None
    rejected = _text(await redis_call("stats", redis.hgetall(keys.rejections(tag, campaign_id))))
    return {
        "campaign_id": campaign_id,
        "stock_added": int(fields["stock_added"]),
        "stock_left": int(fields["stock_left"]),
        "granted": int(fields["granted"]),
        "redeemed": int(fields["redeemed"]),
        "revoked": int(fields.get("revoked", 0)),
        "returned": int(fields.get("returned", 0)),
        "rejected": {code: int(n) for code, n in sorted(rejected.items())},
    }
