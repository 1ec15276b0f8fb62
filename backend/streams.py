"""Consumer-group plumbing on one stream: creating the group, the trim floor, how far behind."""

from __future__ import annotations

from typing import Any

import msgspec
from redis.exceptions import ResponseError


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _fmt(parts: tuple[int, int]) -> str:
    return f"{parts[0]}-{parts[1]}"


async def ensure_group(redis: Any, stream: str, group: str) -> None:
    """The group exists, reading from the stream's first entry (BUSYGROUP is fine)."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def trim_floor(redis: Any, stream: str) -> str | None:
    """The lowest id some group has not committed: everything below it is safe to trim.

    Per group: its oldest pending entry, or the entry after its last delivered one. The
    groups are read before their pending lists, so an entry delivered in between is above
    the last-delivered id seen and never below the floor.
    """
    groups = await redis.xinfo_groups(stream)
    if not groups:
        return None
    floor: tuple[int, int] | None = None
    for info in groups:
        last = _parse(text(info["last-delivered-id"]))
        candidate = (last[0], last[1] + 1)
        if int(info["pending"]) > 0:
            summary = await redis.xpending(stream, text(info["name"]))
            if summary["pending"]:
                candidate = min(candidate, _parse(text(summary["min"])))
        floor = candidate if floor is None else min(floor, candidate)
    return None if floor is None or floor == (0, 1) else _fmt(floor)


class StreamStatus(msgspec.Struct, frozen=True):
    behind: int  # entries not yet committed by the group (pending + undelivered)
    oldest_ms: int | None  # when the oldest of them was appended


async def stream_status(redis: Any, stream: str, group: str) -> StreamStatus:
    """How far the group is behind on the stream."""
    infos = [i for i in await redis.xinfo_groups(stream) if text(i["name"]) == group]
    if not infos:
        return StreamStatus(0, None)
    info = infos[0]
    pending, lag = int(info["pending"]), int(info.get("lag") or 0)
    if pending:
        summary = await redis.xpending(stream, group)
        if summary["pending"]:
            return StreamStatus(pending + lag, _parse(text(summary["min"]))[0])
    if lag:
        after = "(" + text(info["last-delivered-id"])
        first = await redis.xrange(stream, min=after, max="+", count=1)
        return StreamStatus(lag, _parse(text(first[0][0]))[0] if first else None)
    return StreamStatus(0, None)
