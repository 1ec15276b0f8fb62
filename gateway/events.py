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
from redis.exceptions import ResponseError

from gateway import keys
from gateway.redis_conn import connect, embedded_url
from gateway.settings import load


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


async def _tail(redis: Any, group: str | None, consumer: str, from_start: bool, count: int,
                follow: bool) -> int:
    cursors: dict[str, str] = {}
    printed = 0
    while True:
        idle = True
        for stream in await _streams(redis):
            if stream not in cursors:
                cursors[stream] = "0" if from_start else "$"
                if cursors[stream] == "$":
                    last = await redis.xinfo_stream(stream) if await redis.exists(stream) else None
                    cursors[stream] = _text(last["last-generated-id"]) if last else "0"
                if group:
                    await _ensure_group(redis, stream, group, from_start)
            for entry_id, fields in await _read_once(redis, stream, cursors[stream], group, consumer):
                idle = False
                cursors[stream] = entry_id
                sys.stdout.write(orjson.dumps({"stream": stream, "id": entry_id, **fields}).decode() + "\n")
                if group:
                    await redis.xack(stream, group, entry_id)
                printed += 1
                if count and printed >= count:
                    sys.stdout.flush()
                    return 0
        sys.stdout.flush()
        if idle:
            if not follow:
                return 0
            await asyncio.sleep(0.2)


def tail(config: str, group: str | None, consumer: str, from_start: bool, count: int,
         follow: bool) -> int:
    """Print events until interrupted (or `count` printed, or caught up without follow)."""
    settings = load(config)
    url = settings.redis.url
    if url == "embedded":
        url = embedded_url(settings.redis.data_dir) or ""
        if not url:
            print("no running embedded Valkey found under " + settings.redis.data_dir, file=sys.stderr)
            return 1

    async def run() -> int:
        redis = connect(url, settings.redis.timeout_s)
        try:
            return await _tail(redis, group, consumer, from_start, count, follow)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 0
