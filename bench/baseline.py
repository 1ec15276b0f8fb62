"""The "obvious lean design" the gateway is benchmarked against.

    python bench/baseline.py --port 18090 --redis redis://127.0.0.1:6379/0 --seed-stock 1000000

One route, `POST /v1/campaigns/{campaign_id}/claims`: aiohttp on uvloop, the body parsed with
orjson, and ONE plain redis-py `EVALSHA` of bench/baseline_claim.lua per request, doing what a
real claim does (idempotency, per-IP and per-user sliding windows, per-user allowance, stock,
voucher hash, one event). No auth, no metrics, no local caches: nothing else.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import redis.asyncio as aredis
import uvloop
from aiohttp import web
from redis.commands.core import AsyncScript

LUA = Path(__file__).with_name("baseline_claim.lua")
JSON = "application/json"
_BAD_REQUEST = orjson.dumps({"error": {"code": "invalid_request", "message": "bad body"}})
_REUSED = orjson.dumps(
    {"error": {"code": "idempotency_key_reused", "message": "key used with another body"}}
)
_LIMITED = orjson.dumps({"error": {"code": "rate_limited", "message": "slow down"}})


def key(campaign: str, kind: str, ident: str = "") -> str:
    """The one place baseline key names are built; all share the `{campaign}` hash tag."""
    return f"bl:{{{campaign}}}:{kind}:{ident}" if ident else f"bl:{{{campaign}}}:{kind}"


@dataclass(frozen=True)
class Limits:
    """What the baseline enforces (defaults match bench/gateway.toml)."""

    ip_window_s: int = 10
    per_ip: int = 100_000
    user_window_s: int = 60
    per_user: int = 10
    allowance: int = 1  # grants per user per campaign
    idempotency_ttl_s: int = 86_400
    voucher_ttl_s: int = 86_400


REDIS: web.AppKey[aredis.Redis] = web.AppKey("redis", aredis.Redis)
SCRIPT: web.AppKey[AsyncScript] = web.AppKey("claim_script", AsyncScript)
LIMITS: web.AppKey[Limits] = web.AppKey("limits", Limits)


async def seed(client: aredis.Redis, campaign: str, stock: int) -> None:
    """Reset a campaign's counters: `stock` added and left, nothing granted."""
    await client.mset(
        {
            key(campaign, "stock_added"): stock,
            key(campaign, "stock"): stock,
            key(campaign, "granted"): 0,
        }
    )


async def read_stats(client: aredis.Redis, campaign: str) -> dict[str, int]:
    """stock_added, stock_left and granted, named as in the gateway's admin stats."""
    added, left, granted = await client.mget(
        [key(campaign, "stock_added"), key(campaign, "stock"), key(campaign, "granted")]
    )
    return {
        "stock_added": int(added or 0),
        "stock_left": int(left or 0),
        "granted": int(granted or 0),
    }


def _claim_keys(campaign: str, idem: str, ip: str, user_id: str, code: str) -> list[str]:
    return [
        key(campaign, "idem", idem),
        key(campaign, "rl:ip", ip),
        key(campaign, "rl:user", user_id),
        key(campaign, "allowance", user_id),
        key(campaign, "stock"),
        key(campaign, "granted"),
        key(campaign, "voucher", code),
        key(campaign, "events"),
    ]


def _rfc3339(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _grant_body(campaign: str, user_id: str, claim_id: str, code: str, expires_at: str) -> bytes:
    voucher = {"code": code, "expires_at": expires_at}
    doc = {"claim_id": claim_id, "campaign_id": campaign, "user_id": user_id, "voucher": voucher}
    return orjson.dumps(doc)


def _identity(raw: bytes) -> tuple[str, str] | None:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    user_id, device_id = doc.get("user_id"), doc.get("device_id")
    if not (isinstance(user_id, str) and isinstance(device_id, str) and user_id and device_id):
        return None
    return user_id, device_id


async def claim(request: web.Request) -> web.Response:
    """Decide one claim with one EVALSHA."""
    campaign = request.match_info["campaign_id"]
    idem = request.headers.get("Idempotency-Key", "")
    raw = await request.read()
    identity = _identity(raw)
    if identity is None or not idem:
        return web.Response(status=400, body=_BAD_REQUEST, content_type=JSON)
    user_id, device_id = identity
    limits = request.app[LIMITS]
    now = time.time()
    claim_id, code = uuid.uuid4().hex, secrets.token_hex(8)
    expires_at = _rfc3339(now + limits.voucher_ttl_s)
    granted = _grant_body(campaign, user_id, claim_id, code, expires_at)
    ip = request.remote or ""
    status, body = await request.app[SCRIPT](
        keys=_claim_keys(campaign, idem, ip, user_id, code),
        args=[
            int(now * 1000),
            limits.ip_window_s * 1000,
            limits.per_ip,
            limits.user_window_s * 1000,
            limits.per_user,
            limits.allowance,
            limits.idempotency_ttl_s,
            hashlib.blake2b(raw, digest_size=8).hexdigest(),
            claim_id,
            granted,
            code,
            user_id,
            device_id,
            ip,
            expires_at,
            limits.voucher_ttl_s,
            campaign,
        ],
    )
    return _respond(int(status), body)


def _respond(status: int, body: bytes) -> web.Response:
    if status == 429:
        return web.Response(
            status=429, body=_LIMITED, content_type=JSON, headers={"Retry-After": body.decode()}
        )
    if status == 422:
        return web.Response(status=422, body=_REUSED, content_type=JSON)
    headers = {"Idempotent-Replayed": "true"} if status < 0 else None
    return web.Response(status=abs(status), body=body, content_type=JSON, headers=headers)


def create_app(
    redis_url: str, limits: Limits | None = None, seed_stock: dict[str, int] | None = None
) -> web.Application:
    """The baseline app; `seed_stock` maps campaign ids to the stock they start with."""
    app = web.Application()
    app[LIMITS] = limits or Limits()

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        client = aredis.Redis.from_url(redis_url)
        source = LUA.read_text(encoding="utf-8")
        await client.script_load(source)
        app[REDIS], app[SCRIPT] = client, client.register_script(source)
        for campaign, stock in (seed_stock or {}).items():
            await seed(client, campaign, stock)
        yield
        await client.aclose()

    app.cleanup_ctx.append(redis_ctx)
    app.router.add_post("/v1/campaigns/{campaign_id}/claims", claim)
    return app


def main(argv: list[str] | None = None) -> None:
    """CLI: serve the baseline on one process (uvloop)."""
    parser = argparse.ArgumentParser(prog="python bench/baseline.py", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis/Valkey URL")
    parser.add_argument("--campaign", default="bench", help="campaign id --seed-stock applies to")
    parser.add_argument("--seed-stock", type=int, help="reset the campaign to this stock at start")
    args = parser.parse_args(argv)
    seeds = {args.campaign: args.seed_stock} if args.seed_stock is not None else None
    app = create_app(args.redis, seed_stock=seeds)
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
