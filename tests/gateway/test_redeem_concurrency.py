"""Exact counts under concurrent redemptions on the real multi-worker server.

- A supplier that commits and then times out: every redemption ends delivered exactly once.
- One voucher redeemed many times at once reaches one supplier once.
- Card secrets: N cards give N distinct deliveries, and no secret leaks to logs, metrics,
  events or Redis at rest.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.valkey import keys
from tests.gateway.conftest import Gateway
from tests.gateway.test_redemptions import error_code, knobs, sim_orders
from tests.gateway.test_supplier_resilience import (
    ADMIN,
    PUBLIC,
    fresh_connections,
    grant_all,
    put_campaign,
    redeem,
    redeem_all,
    served_suppliers,
    sim_call,
    sim_successes,
)
from tests.support.served import scrape_until, serve

CARDS = {"kind": "card_secret", "sku": "gift"}
RECHARGE = {"kind": "direct_recharge", "sku": "topup-10", "suppliers": ["alpha", "beta"]}


async def settled(public: str, results: list[tuple[int, Any]], seconds: float = 15.0) -> list[str]:
    """Poll every redemption answered 202 until none is pending; returns the final statuses."""
    statuses = {body["redemption_id"]: body["status"] for _, body in results}
    async with aiohttp.ClientSession() as session:
        for _ in range(int(seconds / 0.25)):
            waiting = [rid for rid, status in statuses.items() if status == "pending"]
            if not waiting:
                break
            await asyncio.sleep(0.25)
            for rid in waiting:
                async with session.get(f"{public}/v1/redemptions/{rid}", headers=PUBLIC) as resp:
                    assert resp.status == 200
                    statuses[rid] = (await resp.json())["status"]
    return list(statuses.values())


async def events_of(redis: Any, campaign_id: str, event_type: bytes) -> int:
    entries = await redis.xrange(keys.events(keys.shard_tag(campaign_id)))
    return sum(1 for _id, fields in entries if fields[b"type"] == event_type)


async def when_all_posted(simulator: str, n: int, values: dict[str, Any]) -> None:
    """Once alpha has received n orders, change its knobs (bounded wait)."""
    for _ in range(200):
        stats = await sim_call(simulator, "GET", "/_sim/stats")
        if stats["alpha"].get("post", 0) >= n:
            break
        await asyncio.sleep(0.02)
    await sim_call(simulator, "PUT", "/_sim/suppliers/alpha", values)


async def test_commit_then_timeout_delivers_each_of_200_concurrent_redemptions_exactly_once(
    tmp_path: Path, valkey_url: str, redis_client: Any, simulator: str
) -> None:
    # alpha creates the order, then sleeps past the gateway's 1.5 s timeout: an unknown outcome.
    await sim_call(
        simulator,
        "PUT",
        "/_sim/suppliers/alpha",
        {"timeout_rate": 1.0, "commit_before_timeout": True, "timeout_s": 4.0},
    )
    extra = served_suppliers(simulator, timeout_s=1.5, sweep_after_s=4.0)
    with serve(tmp_path, valkey_url, workers=2, extra=extra) as served:
        await put_campaign(served.admin, "slow", 200, RECHARGE)
        vouchers = await grant_all(served.public, "slow", [f"u{i}" for i in range(200)])
        # Once every order is committed, half of alpha's answers are 500 for a while: where the
        # GET after the timeout fails too, the gateway answers 202 and the reconciler settles.
        flip = asyncio.create_task(when_all_posted(simulator, 200, {"error_rate": 0.5}))
        results = await redeem_all(served.public, vouchers)
        await flip
        # alpha stays slow to answer: the reconciler must not settle its orders one by one
        await sim_call(
            simulator, "PUT", "/_sim/suppliers/alpha", {"error_rate": 0.0, "latency_ms": 400}
        )
        counts = collections.Counter(status for status, _ in results)
        assert set(counts) == {200, 202}, counts
        assert await settled(served.public, results) == ["delivered"] * 200
        rids = {body["redemption_id"] for _, body in results}
        assert len(rids) == 200
        successes = await sim_successes(simulator)
        assert successes == dict.fromkeys(rids, 1)  # one success per redemption, all suppliers
        assert len(await sim_call(simulator, "GET", "/_sim/orders")) == 200
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{served.admin}/admin/campaigns/slow/stats", headers=ADMIN) as response,
        ):
            assert (await response.json())["redeemed"] == 200
        assert await events_of(redis_client, "slow", b"redemption.delivered") == 200


async def test_one_voucher_redeemed_50_times_at_once_reaches_one_supplier_once(
    redeem_gateway: Gateway,
) -> None:
    gw = redeem_gateway
    await knobs(gw, "alpha", latency_ms=200)  # the first is still at alpha when the rest arrive
    campaign = await gw.put_campaign(benefit=RECHARGE)
    code = await gw.grant(campaign)
    answers = await asyncio.gather(*(gw.redeem(code, account="acct") for _ in range(50)))
    statuses = collections.Counter(a.status for a in answers)
    assert statuses == {200: 1, 409: 49}, statuses
    refusals = {await error_code(a) for a in answers if a.status == 409}
    assert refusals <= {"request_in_progress", "voucher_redeemed"}
    assert [o["status"] for o in await sim_orders(gw)] == ["success"]
    assert (await gw.stats(campaign))["redeemed"] == 1


def card_upload(prefix: str, first: int, count: int) -> list[dict[str, str]]:
    return [
        {"card_no": f"{prefix}-{i:04d}", "secret": f"SECRET{i:04d}x{uuid.uuid4().hex}"}
        for i in range(first, first + count)
    ]


async def upload(
    session: aiohttp.ClientSession, admin: str, campaign_id: str, cards: list[dict[str, str]]
) -> None:
    for start in range(0, len(cards), 100):  # stay under server.max_body_bytes
        async with session.post(
            f"{admin}/admin/campaigns/{campaign_id}/card-secrets",
            json={"cards": cards[start : start + 100]},
            headers=ADMIN,
        ) as response:
            text = await response.text()
            assert response.status == 200, text
            assert "SECRET" not in text


async def redis_at_rest(redis: Any) -> bytes:
    """Every value Redis holds, as one blob (strings, hashes, lists, sets, zsets, streams)."""
    readers = {
        b"string": lambda k: redis.get(k),
        b"hash": lambda k: redis.hgetall(k),
        b"list": lambda k: redis.lrange(k, 0, -1),
        b"set": lambda k: redis.smembers(k),
        b"zset": lambda k: redis.zrange(k, 0, -1),
        b"stream": lambda k: redis.xrange(k),
    }
    parts = []
    async for key in redis.scan_iter(count=1000):
        parts.append(repr(await readers[await redis.type(key)](key)).encode())
    return b"\n".join(parts)


async def all_events(redis: Any) -> str:
    streams = await redis.smembers(keys.EVENT_STREAMS)
    assert streams
    return "\n".join([repr(await redis.xrange(stream)) for stream in streams])


async def test_500_concurrent_card_redemptions_get_500_distinct_cards_and_no_secret_leaks(
    tmp_path: Path, valkey_url: str, redis_client: Any
) -> None:
    cards = card_upload("C", 0, 500)
    with serve(tmp_path, valkey_url, workers=2) as served:
        await put_campaign(served.admin, "gift", 501, CARDS)
        async with aiohttp.ClientSession() as session:
            await upload(session, served.admin, "gift", cards)
        vouchers = await grant_all(served.public, "gift", [f"u{i}" for i in range(501)])
        last_user = "u500"
        last_code = vouchers.pop(last_user)
        results = await redeem_all(served.public, vouchers, account=None)
        assert [status for status, _ in results] == [200] * 500, results
        delivered = [(b["delivery"]["card_no"], b["delivery"]["secret"]) for _, b in results]
        assert sorted(delivered) == sorted((c["card_no"], c["secret"]) for c in cards)

        async with fresh_connections() as session:  # the 501st: pool empty, stays redeemable
            status, body = await redeem(
                session, served.public, last_code, last_user, key="last", account=None
            )
            assert (status, body["error"]["code"]) == (503, "pool_empty")
            extra = card_upload("D", 500, 1)
            await upload(session, served.admin, "gift", extra)
            status, body = await redeem(
                session, served.public, last_code, last_user, key="last", account=None
            )
            assert status == 200, body
            assert body["delivery"]["secret"] == extra[0]["secret"]
            delivered_sample = 'gateway_redemptions_total{result="delivered"} 501.0'
            metrics_text = await scrape_until(session, f"{served.public}/metrics", delivered_sample)
        assert delivered_sample in metrics_text
        secrets = [c["secret"] for c in cards + extra]
        log_text = served.log()
    streams = await all_events(redis_client)
    at_rest = await redis_at_rest(redis_client)
    for secret in secrets:
        assert secret not in log_text
        assert secret not in metrics_text
        assert secret not in streams
        assert secret.encode() not in at_rest


async def test_card_secrets_stay_out_of_debug_logs(
    redeem_gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = redeem_gateway
    campaign = await gw.put_campaign(stock=4, benefit=CARDS)
    cards = card_upload("L", 0, 3)
    assert (
        await gw.admin_call("POST", f"/admin/campaigns/{campaign}/card-secrets", {"cards": cards})
    ).status == 200
    codes = [await gw.grant(campaign, user_id=f"u{i}") for i in range(4)]
    answers = await asyncio.gather(*(gw.redeem(c, user_id=f"u{i}") for i, c in enumerate(codes)))
    assert sorted(a.status for a in answers) == [200, 200, 200, 503]
    empty = next(a for a in answers if a.status == 503)
    assert await error_code(empty) == "pool_empty"
    replayed = [
        await gw.public.get(
            f"/v1/redemptions/{(await a.json())['redemption_id']}",
            headers={"Authorization": "Bearer test-key"},
        )
        for a in answers
        if a.status == 200
    ]
    assert {(await r.json())["delivery"]["secret"] for r in replayed} == {
        c["secret"] for c in cards
    }
    logged = caplog.text + "\n".join(repr(r.args) + repr(r.__dict__) for r in caplog.records)
    assert caplog.records  # something was logged at all
    for card in cards:
        assert card["secret"] not in logged
