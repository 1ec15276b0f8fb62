"""`gateway events tail`: print the event streams as JSON lines, optionally via a consumer group.

Events live in one stream per campaign shard tag (`gw:{XY}:events`) plus `gw:{admin}:events`;
the set `gw:event-streams` lists them. Each stream is read on its own, so this works on a
cluster too.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.settings import load
from gateway.valkey import keys
from gateway.valkey.connect import connect, embedded_url


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _streams(redis: Any) -> list[str]:
    return sorted(_text(s) for s in await redis.smembers(keys.EVENT_STREAMS))


async def _ensure_group(redis: Any, stream: str, group: str, from_start: bool) -> None:
    try:
        await redis.xgroup_create(stream, group, id="0" if from_start else "$", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def _read_once(
    redis: Any, stream: str, cursor: str, group: str | None, consumer: str
) -> list[tuple[str, dict[str, str]]]:
    if group:
        reply = await redis.xreadgroup(group, consumer, {stream: ">"}, count=500)
    else:
        reply = await redis.xread({stream: cursor}, count=500)
    out = []
    for _name, entries in reply or []:
        for entry_id, fields in entries:
            out.append((_text(entry_id), {_text(k): _text(v) for k, v in fields.items()}))
    return out


class _Tail:
    """One reader over every event stream: a cursor (or a consumer group) per stream."""

    def __init__(self, redis: Any, group: str | None, consumer: str, from_start: bool) -> None:
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.from_start = from_start
        self.cursors: dict[str, str] = {}

    async def _start(self, stream: str) -> None:
        cursor = "0"
        if not self.from_start and await self.redis.exists(stream):
            cursor = _text((await self.redis.xinfo_stream(stream))["last-generated-id"])
        self.cursors[stream] = cursor
        if self.group:
            await _ensure_group(self.redis, stream, self.group, self.from_start)

    async def drain(self, stream: str, budget: int) -> int:
        """Print up to `budget` new events of one stream (0: no limit); returns how many."""
        if stream not in self.cursors:
            await self._start(stream)
        entries = await _read_once(
            self.redis, stream, self.cursors[stream], self.group, self.consumer
        )
        if budget:
            entries = entries[:budget]
        for entry_id, fields in entries:
            self.cursors[stream] = entry_id
            line = orjson.dumps({"stream": stream, "id": entry_id, **fields}).decode()
            sys.stdout.write(line + "\n")
            if self.group:
                await self.redis.xack(stream, self.group, entry_id)
        sys.stdout.flush()
        return len(entries)


async def _tail(
    redis: Any, group: str | None, consumer: str, from_start: bool, count: int, follow: bool
) -> int:
    reader = _Tail(redis, group, consumer, from_start)
    printed = 0
    while True:
        before = printed
        for stream in await _streams(redis):
            printed += await reader.drain(stream, count - printed if count else 0)
            if count and printed >= count:
                return 0
        if printed == before:
            if not follow:
                return 0
            await asyncio.sleep(0.2)


def tail(
    config: str, group: str | None, consumer: str, from_start: bool, count: int, follow: bool
) -> int:
    """Print events until interrupted (or `count` printed, or caught up without follow)."""
    settings = load(config)
    url = settings.redis.url
    if url == "embedded":
        url = embedded_url(settings.redis.data_dir) or ""
        if not url:
            print(
                "no running embedded Valkey found under " + settings.redis.data_dir, file=sys.stderr
            )
            return 1

    async def run() -> int:
        redis = connect(url, settings.redis.timeout_s)
        try:
            return await _tail(redis, group, consumer, from_start, count, follow)
        finally:
            await redis.aclose()

    if follow:
        print(
            "following new events; Ctrl-C stops (--no-follow: stop when caught up)", file=sys.stderr
        )
    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 0
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        print(f"events tail: cannot read from Valkey at {url}: {exc}", file=sys.stderr)
        return 1
