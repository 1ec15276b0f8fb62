"""How far the event streams' consumers are behind what the length cap has already cut.

The admin backend reads every stream through the consumer group `LEDGER_GROUP` and trims a
stream only up to what it has committed; the gateway's `XADD … MAXLEN ~` cap is the last
resort. An entry the cap removed before the group was handed it is lost to the ledger: that
count, derived from the stream's own figures, is what this module reports.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import ResponseError

from gateway.valkey import keys


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _trimmed_unread(redis: Any, stream: str) -> int:
    try:
        info = await redis.xinfo_stream(stream)
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # the stream is gone (no key): nothing was cut from it
        return 0
    ledger = [g for g in groups if _text(g.get("name")) == keys.LEDGER_GROUP]
    read = ledger[0].get("entries-read") if ledger else None
    if read is None:  # no ledger group, or Valkey cannot tell how far it read
        return 0
    removed = int(info["entries-added"]) - int(info["length"])
    return max(0, removed - int(read))


async def trimmed_unread(redis: Any) -> int:
    """Entries removed from the event streams before the ledger's group was handed them."""
    streams = [_text(s) for s in await redis.smembers(keys.EVENT_STREAMS)]
    counts = await asyncio.gather(*(_trimmed_unread(redis, s) for s in streams))
    return sum(counts)
