"""The ledger from real gateway events: counts equal the gateway's stats, exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.ledger import prepare, write_batch
from backend.reports import campaign_report
from backend.schema import counters, dead_letters, events
from gateway.valkey import keys
from tests.backend.conftest import ingester
from tests.gateway.conftest import Gateway


async def _count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(table)) or 0)


def _from_stats(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: stats[k] for k in ("stock_added", "granted", "redeemed", "rejected")}


def _from_report(report: dict[str, Any]) -> dict[str, Any]:
    funnel = report["funnel"]
    return {k: funnel[k] for k in ("stock_added", "granted", "redeemed")} | {
        "rejected": report["rejected"]
    }


async def _claims(gateway: Gateway, campaign_id: str, users: list[str]) -> list[Any]:
    return list(await asyncio.gather(*[gateway.claim(campaign_id, user_id=u) for u in users]))


async def test_counts_equal_the_gateway_stats_after_ingest(
    gateway: Gateway, engine: AsyncEngine
) -> None:
    campaign_id = await gateway.put_campaign(stock=5)
    await gateway.admin_call("POST", f"/admin/campaigns/{campaign_id}/stock", {"add": 3})
    users = [f"u{i % 10}" for i in range(30)]  # repeats: limit_reached; 8 stock: sold_out
    await _claims(gateway, campaign_id, users)
    code = await gateway.grant(await gateway.put_campaign(stock=1), user_id="ruth")
    assert (await gateway.redeem(code)).status == 200
    reader = ingester(gateway.redis, engine)
    await reader.catch_up()
    for cid in (campaign_id,):
        report = await campaign_report(engine, cid)
        assert report is not None
        assert _from_report(report) == _from_stats(await gateway.stats(cid))
        assert report["funnel"]["granted"] == 8


async def test_a_redelivered_batch_is_not_counted_twice(
    gateway: Gateway, engine: AsyncEngine
) -> None:
    campaign_id = await gateway.put_campaign(stock=50)
    await _claims(gateway, campaign_id, [f"u{i}" for i in range(20)])
    stream = keys.events(keys.shard_tag(campaign_id))
    first = ingester(gateway.redis, engine, consumer="first")
    await first.catch_up()
    # The same entries delivered again (a crash between commit and XACK): read with a new group.
    await gateway.redis.xgroup_setid(stream, "ledger", "0")
    await ingester(gateway.redis, engine, consumer="second", trim=False).catch_up()
    report = await campaign_report(engine, campaign_id)
    assert report is not None and report["funnel"]["granted"] == 20
    assert await _count(engine, events) == 21


async def test_one_batch_committed_by_two_ingesters_at_once_counts_once(
    engine: AsyncEngine,
) -> None:
    # Two ingesters holding the same entries (a consumer taken over while its commit was
    # still running): on PostgreSQL both transactions may find none of them yet, and the
    # second to insert fails on the key and looks again; on SQLite they take turns.
    stream = keys.events("TW")
    good = {b"type": b"claim.granted", b"ts": b"2026-01-01T00:00:00Z", b"campaign_id": b"tw"}
    entries = [
        (
            f"{n + 1}-0",
            good | {b"user_id": b"u%d" % n, b"claim_id": b"clm_%d" % n, b"voucher_code": b"TW"},
        )
        for n in range(300)
    ]
    entries.append(("301-0", {b"type": b"claim.granted"}))  # a dead letter, also once
    results = await asyncio.gather(
        *[write_batch(engine, stream, prepare(stream, entries)) for _ in range(4)]
    )
    assert sorted(r.new for r in results) == [0, 0, 0, 300]
    assert sorted(r.dead for r in results) == [0, 0, 0, 1]
    assert await _count(engine, events) == 300
    assert await _count(engine, dead_letters) == 1
    async with engine.connect() as connection:
        granted = await connection.scalar(
            select(counters.c.n).where(counters.c.campaign_id == "tw", counters.c.name == "granted")
        )
    assert granted == 300


async def test_a_malformed_event_becomes_a_dead_letter_and_is_acked(
    redis_client: Any, engine: AsyncEngine
) -> None:
    stream = keys.events("AB")
    await redis_client.sadd(keys.EVENT_STREAMS, stream)
    await redis_client.xadd(stream, {"type": "claim.granted", "ts": "2026-01-01T00:00:00Z"})
    await redis_client.xadd(stream, {"type": "claim.rejected", "ts": "yesterday"})
    await redis_client.xadd(stream, {"ts": "2026-01-01T00:00:00Z"})
    too_long = {"campaign_id": "c", "code": "x", "user_id": "u" * 129}
    await redis_client.xadd(
        stream, {"type": "claim.rejected", "ts": "2026-01-01T00:00:00Z"} | too_long
    )
    good = await redis_client.xadd(
        stream,
        {"type": "claim.rejected", "ts": "2026-01-01T00:00:00Z", "campaign_id": "c", "code": "x"},
    )
    await ingester(redis_client, engine, trim=False).catch_up()
    async with engine.connect() as connection:
        rows = (await connection.execute(select(dead_letters).order_by("entry_id"))).all()
    reasons = [row.reason for row in rows]
    assert reasons == [
        "claim.granted: missing campaign_id, claim_id, voucher_code, user_id",
        "ts: not RFC 3339: 'yesterday'",
        "no type",
        "claim.rejected: user_id longer than 128 characters",
    ]
    assert await _count(engine, events) == 1
    pending = await redis_client.xpending(stream, "ledger")
    assert pending["pending"] == 0 and good


async def test_cost_and_risk_hits_come_from_the_campaign_and_risk_events(
    redis_client: Any, engine: AsyncEngine
) -> None:
    stream = keys.events("GH")
    await redis_client.sadd(keys.EVENT_STREAMS, stream)
    ts = {"ts": "2026-01-01T00:00:00Z", "campaign_id": "paid"}
    config = {"stock": "10", "voucher_ttl_s": "60", "unit_cost": "250", "currency": "CNY"}
    await redis_client.xadd(stream, {"type": "campaign.created"} | ts | config)
    for user in ("a", "b", "c"):
        grant = {"claim_id": f"clm_{user}", "voucher_code": f"GH{user}…XYZ", "user_id": user}
        await redis_client.xadd(stream, {"type": "claim.granted"} | ts | grant)
    hit = {"type": "risk.hit", "rules": "ip_burst,device_farm", "decision": "shadow"}
    await redis_client.xadd(stream, hit | ts)
    await redis_client.xadd(stream, hit | ts | {"rules": "ip_burst", "decision": "deny"})
    await ingester(redis_client, engine).catch_up()
    report = await campaign_report(engine, "paid")
    assert report is not None
    assert report["cost"] == {"unit_cost": 250, "currency": "CNY", "spent": 750}
    assert report["risk_hits"] == {
        "device_farm": {"shadow": 1},
        "ip_burst": {"enforce": 1, "shadow": 1},
    }
    assert report["funnel"]["stock_left"] == 7
