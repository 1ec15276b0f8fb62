"""Two ingesters in one group, a dead consumer, trimming: never double counted, never lost."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import db
from backend.reports import campaign_report
from backend.schema import events
from gateway.valkey import keys
from tests.backend.conftest import ingester
from tests.gateway.conftest import Gateway
from tests.support.waiting import eventually


async def _event_count(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(events)) or 0)


async def _stream_total(redis: Any) -> int:
    """Entries ever appended to every stream (the group's entries-read survives trimming)."""
    total = 0
    for stream in await redis.smembers(keys.EVENT_STREAMS):
        total += int((await redis.xinfo_stream(stream))["entries-added"])
    return total


async def _all_in(engine: AsyncEngine, redis: Any) -> bool:
    return await _event_count(engine) >= await _stream_total(redis)


async def test_two_backends_in_one_group_never_double_count(
    gateway: Gateway, engine: AsyncEngine, database_url: str, tmp_path: Any
) -> None:
    other = db.create_engine(db.async_url(database_url, tmp_path))
    campaign_id = await gateway.put_campaign(stock=300)
    a = ingester(gateway.redis, engine, consumer="a", batch=40, idle_sleep_s=0.01)
    b = ingester(gateway.redis, other, consumer="b", batch=40, idle_sleep_s=0.01)
    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    try:
        for start in range(0, 1200, 200):
            users = [f"u{i % 400}" for i in range(start, start + 200)]
            await asyncio.gather(*[gateway.claim(campaign_id, user_id=u) for u in users])
        await eventually(lambda: _all_in(engine, gateway.redis), within_s=60, step=0.1)
    finally:
        a.stop()
        b.stop()
        await asyncio.gather(*tasks)
        await other.dispose()
    assert a.metrics.events_ingested._value.get() > 0
    assert b.metrics.events_ingested._value.get() > 0
    report = await campaign_report(engine, campaign_id)
    stats = await gateway.stats(campaign_id)
    assert report is not None
    assert report["funnel"]["granted"] == stats["granted"] == 300
    assert report["rejected"] == stats["rejected"]
    # Each entry once: as many ledger events as the streams ever held (campaign event included).
    assert await _event_count(engine) == await _stream_total(gateway.redis) > 301


async def test_a_dead_consumers_pending_entries_are_taken_over(
    gateway: Gateway, engine: AsyncEngine
) -> None:
    campaign_id = await gateway.put_campaign(stock=20)
    await asyncio.gather(*[gateway.claim(campaign_id, user_id=f"u{i}") for i in range(20)])
    stream = keys.events(keys.shard_tag(campaign_id))
    live = ingester(gateway.redis, engine, consumer="live", claim_idle_ms=100, trim=False)
    await live.step()  # creates the group... and reads everything: undo that for the test
    await gateway.redis.xgroup_destroy(stream, "ledger")
    await gateway.redis.xgroup_create(stream, "ledger", id="0")
    # A consumer reads every entry and dies before committing.
    await gateway.redis.xreadgroup("ledger", "dead", {stream: ">"}, count=1000)
    await asyncio.sleep(0.2)
    await live.catch_up()
    pending = await gateway.redis.xpending(stream, "ledger")
    assert pending["pending"] == 0
    report = await campaign_report(engine, campaign_id)
    assert report is not None and report["funnel"]["granted"] == 20


async def test_a_stream_is_trimmed_only_up_to_what_is_committed(
    redis_client: Any, engine: AsyncEngine
) -> None:
    stream = keys.events("CD")
    await redis_client.sadd(keys.EVENT_STREAMS, stream)
    ids = [
        await redis_client.xadd(
            stream,
            {
                "type": "claim.rejected",
                "ts": "2026-01-01T00:00:00Z",
                "campaign_id": "c",
                "code": "x",
            },
        )
        for _ in range(10)
    ]
    await redis_client.xgroup_create(stream, "ledger", id="0")
    # Entries 1-3 are delivered to a consumer that has not committed them.
    await redis_client.xreadgroup("ledger", "slow", {stream: ">"}, count=3)
    reader = ingester(redis_client, engine, consumer="fast", batch=4, drain_batches=1)
    await reader.drain(stream)  # commits 4-7
    assert await redis_client.xlen(stream) == 10  # 1-3 pending: nothing below them goes
    await redis_client.xack(stream, "ledger", *ids[:3])  # "slow" committed (elsewhere)
    await reader.trim(stream)
    remaining = [entry_id for entry_id, _ in await redis_client.xrange(stream)]
    assert remaining == ids[7:]  # 1-7 committed and trimmed; 8-10 never delivered: kept
