"""Events the length cap cuts before the ledger's group read them are counted, per scrape."""

from __future__ import annotations

import re
from typing import Any

from gateway.valkey import keys
from tests.gateway.conftest import Gateway


async def scrape_trimmed(gateway: Gateway) -> float:
    response = await gateway.public.get("/metrics")
    text = await response.text()
    found = re.search(r"^gateway_events_trimmed_unread_total (\S+)$", text, re.MULTILINE)
    assert found, "the family is missing"
    return float(found.group(1))


async def fill(redis: Any, stream: str, entries: int) -> None:
    await redis.sadd(keys.EVENT_STREAMS, stream)
    pipe = redis.pipeline(transaction=False)
    for i in range(entries):
        pipe.xadd(stream, {"type": "claim.granted", "n": str(i)})
    await pipe.execute()


async def test_entries_cut_before_the_ledger_read_them_are_counted(gateway: Gateway) -> None:
    redis = gateway.redis
    assert await scrape_trimmed(gateway) == 0  # exists from the start, at 0
    read_some, read_all, no_ledger = keys.events("AA"), keys.events("BB"), keys.events("CC")
    for stream in (read_some, read_all, no_ledger):
        await fill(redis, stream, 3000)
    for stream in (read_some, read_all):
        await redis.xgroup_create(stream, keys.LEDGER_GROUP, id="0")
    await redis.xreadgroup(keys.LEDGER_GROUP, "c", {read_some: ">"}, count=500)
    await redis.xreadgroup(keys.LEDGER_GROUP, "c", {read_all: ">"}, count=3000)
    for stream in (read_some, read_all, no_ledger):
        await redis.xtrim(stream, maxlen=1000, approximate=False)
    # 2,000 cut from each; the ledger had been handed 500 of one stream and all of the other.
    assert await scrape_trimmed(gateway) == 1500
