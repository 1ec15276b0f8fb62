"""Settles redemptions left pending: a supplier said `processing`, its outcome was unknown, or
the worker that reserved the voucher died mid-call.

Every interval each worker leases the due entries of each campaign tag's pending set (so two
workers never look at one redemption at once) and has direct recharge resolve each: no supplier
was ever called → the voucher is released; otherwise the recorded supplier is asked for the
order (SPEC 3.2.1) → delivered, failed (voucher redeemable again), or still pending (looked at
again later).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.redemptions.recharge import DirectRecharge
from gateway.telemetry import metrics
from gateway.valkey import keys
from gateway.valkey.calls import UNREACHABLE

log = logging.getLogger("gateway.redemptions.reconciler")
BATCH = 100


def _stop_requested() -> bool:
    """True once this task was cancelled, even if the CancelledError never reached us: on
    Python 3.11 redis-py's `asyncio.wait_for` around a send can return normally instead."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Reconciler:
    def __init__(
        self,
        redis: Any,
        scripts: Any,
        recharge: DirectRecharge,
        interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._lease = scripts.pending_lease
        self._recharge = recharge
        self._interval_s = interval_s
        self._clock = clock

    async def run(self) -> None:
        """Sweep forever (cancelled at shutdown); Redis outages only delay the next sweep."""
        while True:
            try:
                await self.sweep_once()
            except UNREACHABLE:
                pass
            except Exception:
                log.exception("reconciler sweep failed")
            if _stop_requested():
                raise asyncio.CancelledError
            await asyncio.sleep(self._interval_s)

    async def _tags(self) -> set[str]:
        campaigns = await self._redis.smembers(keys.CAMPAIGNS)
        return {keys.shard_tag(c.decode() if isinstance(c, bytes) else c) for c in campaigns}

    async def sweep_once(self) -> int:
        """Look at every due redemption once; returns how many were looked at."""
        looked, waiting = 0, 0
        lease_ms = int(max(self._interval_s * 3, 5) * 1000)
        for tag in sorted(await self._tags()):
            now_ms = int(self._clock() * 1000)
            due = await self._lease(keys=[keys.pending(tag)], args=[now_ms, lease_ms, BATCH])
            await self._settle_all(tag, [r.decode() if isinstance(r, bytes) else r for r in due])
            looked += len(due)
            waiting += await self._redis.zcard(keys.pending(tag))
        metrics.pending_redemptions.set(waiting)
        return looked

    async def _settle_all(self, tag: str, rids: list[str]) -> None:
        """Settle a leased batch together: one slow supplier answer must not hold up the rest
        past their lease. The first error is raised once every settle has finished."""
        results = await asyncio.gather(
            *(self._recharge.resolve(tag, r) for r in rids), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
