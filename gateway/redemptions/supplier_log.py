"""Every supplier call as a `supplier.call` event on its redemption's stream, for the ledger.

The supplier pool reports each call to its observer, synchronously, from inside a redemption
(or the reconciler). This observer counts it in the metrics at once and queues the event; a
background writer appends the queue to the streams in pipelined batches. Nothing on the
answer path waits on Valkey for it, and a Valkey outage only delays the events: a failed
batch is retried (at least once: a batch whose reply a dropped connection lost is appended
again). A closing worker writes what is queued before it lets go of Valkey.

Limits, on purpose: a worker killed before a batch is written loses those events (the calls
of the last few milliseconds); past `max_queued` waiting events (a long outage) the oldest
are dropped and logged. Calls for order ids that are not redemption ids have no stream, so
only their metrics count.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway import codes
from gateway.telemetry.metrics import SupplierObserver
from gateway.timefmt import rfc3339_ms
from gateway.valkey import keys
from gateway.valkey.calls import UNREACHABLE
from supplier_pool.pool import SupplierCall

log = logging.getLogger("gateway.suppliers")

BATCH = 512
RETRY_S = 0.5


class SupplierCallLog:
    """The supplier pool's observer: metrics now, ledger events soon after."""

    def __init__(
        self,
        redis: Any,
        stream_max_len: int,
        clock: Callable[[], float] = time.time,
        max_queued: int = 100_000,
    ) -> None:
        self._redis = redis
        self._max_len = stream_max_len
        self._clock = clock
        self._metrics = SupplierObserver()
        self._queue: collections.deque[tuple[str, list[str]]] = collections.deque()
        self._max_queued = max_queued
        self._dropped = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def call_finished(self, call: SupplierCall) -> None:
        """Count the call and queue its event."""
        self._metrics.call_finished(call)
        tag = codes.redemption_tag(call.order_id)
        if tag is None:
            return
        fields = [
            "type",
            "supplier.call",
            "ts",
            rfc3339_ms(int(self._clock() * 1000)),
            "supplier",
            call.supplier_id,
            "outcome",
            call.outcome,
            "op",
            call.op,
            "redemption_id",
            call.order_id,
            "failover",
            "1" if call.failover else "0",
        ]
        if call.sent:
            fields += ["latency_ms", str(round(call.seconds * 1000))]
        if len(self._queue) >= self._max_queued:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append((keys.events(tag), fields))
        self._wake.set()

    def breaker_transition(self, supplier_id: str, old: str, new: str) -> None:
        """Metrics only: openings reach the ledger through the shared breaker state."""
        self._metrics.breaker_transition(supplier_id, old, new)

    @property
    def queued(self) -> int:
        """Events waiting to be written."""
        return len(self._queue)

    def start(self) -> None:
        """Write in the background from now on, until close()."""
        self._task = asyncio.create_task(self.run())

    async def close(self, timeout_s: float) -> None:
        """Write what is queued, then stop; after timeout_s the rest is given up (logged).

        The writer finishes on its own rather than being cancelled: a write cancelled after
        it was sent would leave its events queued, and they would be written twice.
        """
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        done, _ = await asyncio.wait([task], timeout=timeout_s)
        if not done:
            task.cancel()
            await asyncio.wait([task], timeout=1.0)
            log.warning("supplier call events: %d not written at shutdown", len(self._queue))
        elif not task.cancelled() and task.exception() is not None:
            log.error("supplier call events: writer failed", exc_info=task.exception())

    async def run(self) -> None:
        """Write queued events until cancelled, or until close() once the queue is empty;
        Valkey errors are logged and retried."""
        failing = False
        while not (self._closing and not self._queue):
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                try:
                    await self.write_batch()
                    failing = False
                except UNREACHABLE as exc:
                    if not failing:  # the start of an outage, not every retry of it
                        log.warning("supplier call events: valkey unavailable: %s", exc)
                    failing = True
                    await asyncio.sleep(RETRY_S)
                except Exception:
                    log.exception("supplier call events: write failed")
                    await asyncio.sleep(RETRY_S)

    async def write_batch(self) -> None:
        """Append up to BATCH queued events; on failure they stay queued, in order."""
        if self._dropped:
            log.warning("supplier call events: %d dropped (queue full)", self._dropped)
            self._dropped = 0
        batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
        try:
            pipe = self._redis.pipeline(transaction=False)
            for stream, fields in batch:
                pipe.execute_command("XADD", stream, "MAXLEN", "~", self._max_len, "*", *fields)
            replies = await pipe.execute(raise_on_error=False)
        except BaseException:
            self._queue.extendleft(reversed(batch))
            raise
        # A refused entry (a reply error, not a lost connection) would be refused again.
        errors = [reply for reply in replies if isinstance(reply, Exception)]
        if errors:
            log.error("supplier call events: %d refused, e.g. %s", len(errors), errors[0])
