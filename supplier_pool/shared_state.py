"""Breaker state shared by the worker processes through one Redis hash, off the hot path.

Each worker keeps deciding with its own in-memory breakers; a background task (`BreakerSync.run`)
publishes this worker's trips and applies what the others wrote, every `interval_s`. No supplier
request ever waits on Redis.

Hash `gw:{suppliers}:breakers`, field = supplier id, value = JSON
`{"forced": "open"|"closed"|null, "open_until": <unix s>|null, "reset_at": <unix s>|null}`.
Admin writes (force, reset) replace the value; trips are merged by `breakers.lua`, which never
overrides a forced state and only ever moves `open_until` later.

With an `events_key`, the trip that opens a breaker anew (none known, or the last one over when
it happened) is also appended to that stream as `supplier.breaker_opened`, in the same script:
one event per fleet-wide opening, however many workers trip during it. A trip is published on
the sync tick after it happened, so a worker killed in between loses it (the event and the
shared state alike).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Literal

import msgspec
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from supplier_pool.breaker import CircuitBreaker, State
from supplier_pool.pool import SupplierPool

log = logging.getLogger(__name__)

BREAKERS_KEY = "gw:{suppliers}:breakers"
_FORCED = {"open": State.FORCED_OPEN, "closed": State.FORCED_CLOSED}


class BreakerEntry(msgspec.Struct, frozen=True):
    """The shared word on one supplier's breaker."""

    forced: Literal["open", "closed"] | None = None
    open_until: float | None = None
    reset_at: float | None = None


_encode_entry = msgspec.json.Encoder().encode
_decode_entry = msgspec.json.Decoder(BreakerEntry).decode


class BreakerSync:
    """Keeps one worker's breakers in step with the shared hash."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        pool: SupplierPool,
        key: str = BREAKERS_KEY,
        interval_s: float = 0.25,
        wall_clock: Callable[[], float] = time.time,
        events_key: str | None = None,
        stream_max_len: int = 1_000_000,
    ) -> None:
        self._redis = redis
        self._pool = pool
        self._key = key
        self._events_key = events_key
        self._max_len = stream_max_len
        self._interval_s = interval_s
        self._wall = wall_clock
        lua = resources.files("supplier_pool").joinpath("breakers.lua").read_text("utf-8")
        self._publish_trip = redis.register_script(lua)
        # Per supplier: the local open_until already published or taken from the hash (so a
        # trip is published once and a remote trip is not echoed back), the latest remote
        # open_until applied, and the latest reset_at applied.
        self._known_local_until: dict[str, float] = {}
        self._applied_until: dict[str, float] = {}
        self._applied_reset: dict[str, float] = {}

    async def run(self) -> None:
        """Sync every interval until cancelled; Redis errors are logged and retried."""
        failing = False
        while True:
            try:
                await self.sync_once()
                failing = False
            except (RedisError, OSError) as exc:
                if not failing:  # log the start of an outage, not every tick of it
                    log.warning("breaker sync: redis unavailable: %s", exc)
                failing = True
            if _stop_requested():
                raise asyncio.CancelledError
            await asyncio.sleep(self._interval_s)

    async def sync_once(self) -> None:
        """Publish local trips, then apply the shared hash to the local breakers."""
        await self._publish_local_trips()
        raw = await self._redis.hgetall(self._key)
        for field, value in raw.items():
            supplier_id = field.decode() if isinstance(field, bytes) else str(field)
            if supplier_id not in self._pool.supplier_ids:
                continue
            try:
                entry = _decode_entry(value)
            except msgspec.DecodeError:
                log.warning("breaker sync: ignoring malformed entry for %s", supplier_id)
                continue
            self._apply(supplier_id, entry)

    async def force_open(self, supplier_id: str) -> None:
        """Force open in every worker: written to the hash, applied here at once."""
        await self._write(supplier_id, BreakerEntry(forced="open"))
        self._pool.force_open(supplier_id)

    async def force_closed(self, supplier_id: str) -> None:
        """Force closed in every worker: written to the hash, applied here at once."""
        await self._write(supplier_id, BreakerEntry(forced="closed"))
        self._pool.force_closed(supplier_id)

    async def reset(self, supplier_id: str) -> None:
        """Back to CLOSED in every worker, clearing forced states and shared trips."""
        reset_at = self._wall()
        await self._write(supplier_id, BreakerEntry(reset_at=reset_at))
        self._applied_reset[supplier_id] = reset_at
        self._pool.reset(supplier_id)

    async def _write(self, supplier_id: str, entry: BreakerEntry) -> None:
        self._pool.breaker(supplier_id)  # KeyError before any write for an unknown supplier
        await self._redis.hset(self._key, supplier_id, _encode_entry(entry))

    async def _publish_local_trips(self) -> None:
        for supplier_id in self._pool.supplier_ids:
            breaker = self._pool.breaker(supplier_id)
            local_until = breaker.open_until
            if local_until is None or local_until == self._known_local_until.get(supplier_id):
                continue
            now, wall_now = breaker.clock(), self._wall()
            wall_until = wall_now + (local_until - now)
            keys, args = [self._key], [supplier_id, repr(wall_until)]
            opened = breaker.opened
            if self._events_key is not None and opened is not None:
                opened_from, opened_at = opened
                wall_opened = wall_now - (now - opened_at)
                keys.append(self._events_key)
                args += [
                    repr(wall_opened),
                    str(opened_from),
                    rfc3339(wall_opened),
                    str(self._max_len),
                ]
            await self._publish_trip(keys=keys, args=args)
            self._known_local_until[supplier_id] = local_until
            self._applied_until[supplier_id] = wall_until

    def _apply(self, supplier_id: str, entry: BreakerEntry) -> None:
        breaker = self._pool.breaker(supplier_id)
        if entry.forced is not None:
            if breaker.state is not _FORCED[entry.forced]:
                _force(breaker, entry.forced)
            return
        if entry.reset_at is not None and entry.reset_at > self._applied_reset.get(supplier_id, 0):
            self._applied_reset[supplier_id] = entry.reset_at
            breaker.reset()
        self._apply_open_until(supplier_id, breaker, entry.open_until)

    def _apply_open_until(
        self, supplier_id: str, breaker: CircuitBreaker, open_until: float | None
    ) -> None:
        """Open here until another worker's trip ends, once per published trip."""
        if open_until is None or open_until <= self._applied_until.get(supplier_id, 0):
            return
        self._applied_until[supplier_id] = open_until
        remaining = open_until - self._wall()
        if remaining > 0 and breaker.hold_open(remaining):
            local_until = breaker.open_until
            if local_until is not None:
                self._known_local_until[supplier_id] = local_until


def _stop_requested() -> bool:
    """True once this task was cancelled, even if the CancelledError never reached us: on
    Python 3.11 redis-py's `asyncio.wait_for` around a send can return normally instead."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def rfc3339(unix_s: float) -> str:
    """`2026-11-23T09:00:00.123Z`, the wire's time format."""
    moment = datetime.fromtimestamp(unix_s, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _force(breaker: CircuitBreaker, forced: Literal["open", "closed"]) -> None:
    if forced == "open":
        breaker.force_open()
    else:
        breaker.force_closed()
