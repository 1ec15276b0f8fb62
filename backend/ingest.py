"""Exactly-once ingest of every gateway event stream into the ledger.

Per stream (each call single-slot, so it works on a cluster): a consumer group `ledger`
created at 0; entries read in batches (XREADGROUP, or XAUTOCLAIM for a dead consumer's
pending ones); each batch committed in one transaction (backend/ledger.py), then XACKed, then
the stream trimmed up to what every group has committed (XTRIM MINID). A failed commit acks
nothing: the batch stays pending with this consumer and is read again (id 0) until it commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import msgspec
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.ledger import BatchResult, Entry, Prepared, prepare, write_batch
from backend.metrics import BackendMetrics
from backend.streams import StreamStatus, ensure_group, stream_status, text, trim_floor
from gateway.valkey import keys

log = logging.getLogger("backend.ingest")


def settle_heap() -> None:
    """Keep what start-up made out of the garbage collector's full passes (gc.freeze).

    Ingest allocates thousands of small containers per batch, so the collector runs often,
    and each full pass would otherwise walk every object made at start-up as well (the
    database drivers', SQLAlchemy's, the app's), none of which is ever garbage.
    """
    gc.collect()
    gc.freeze()


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class IngestOptions(msgspec.Struct, frozen=True):
    group: str = "ledger"
    consumer: str = ""  # empty: host, pid and a random suffix
    # Entries per read and per transaction: a batch's fixed costs (the round trips, the
    # commit, the write turn passing between ingesters) are spread over this many.
    batch: int = 5000
    # Batches one stream commits in a row before the next stream's turn.
    drain_batches: int = 8
    # A consumer's entry pending this long is taken over (its consumer is presumed dead).
    claim_idle_ms: int = 30_000
    discover_every_s: float = 1.0
    status_every_s: float = 1.0  # trimming and lag metrics, per stream
    idle_sleep_s: float = 0.1
    retry_after_s: float = 0.5
    trim: bool = True


class Ingester:
    def __init__(
        self,
        redis: Any,
        engine: AsyncEngine,
        metrics: BackendMetrics,
        options: IngestOptions | None = None,
        clock: Callable[[], float] = time.time,
        on_commit: Callable[[BatchResult], None] | None = None,
    ) -> None:
        self.redis = redis
        self.engine = engine
        self.metrics = metrics
        self.options = options or IngestOptions()
        self.consumer = self.options.consumer or default_consumer()
        self.clock = clock
        self.on_commit = on_commit  # told of each committed batch (a helper reports it)
        self.streams: set[str] = set()
        self.database_ok = True
        self._stopping = asyncio.Event()
        self._discovered_at = float("-inf")
        self._dirty: set[str] = set()  # streams with an uncommitted batch pending with us
        self._claimed_at: dict[str, float] = {}
        self._status_at: dict[str, float] = {}
        self._status: dict[str, StreamStatus] = {}

    async def run(self) -> None:
        """Ingest until `stop()`; database or Valkey failures pause it, never end it."""
        while not self._stopping.is_set():
            try:
                moved = await self.step()
            except (SQLAlchemyError, OSError) as exc:
                self._database_failed(exc)
                await self._pause(self.options.retry_after_s)
                continue
            except RedisError as exc:
                log.warning("valkey unavailable, ingest paused", extra={"error": str(exc)})
                await self._pause(self.options.retry_after_s)
                continue
            except Exception:  # unknown: logged; nothing was acked, so the pass is retried
                log.exception("ingest pass failed")
                await self._pause(self.options.retry_after_s)
                continue
            if not moved:
                await self._pause(self.options.idle_sleep_s)

    def stop(self) -> None:
        """End `run` after the batch in hand: a batch is never cut in the middle of a commit
        (cancelling one mid-transaction can leave a driver connection that never closes)."""
        self._stopping.set()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def step(self) -> int:
        """One pass over every stream; returns how many entries were committed or acked."""
        await self._discover()
        moved = 0
        for stream in sorted(self.streams):
            moved += await self.drain(stream)
        return moved

    async def catch_up(self, timeout_s: float = 60.0) -> None:
        """Step until a pass moves nothing (tests and the bench)."""
        async with asyncio.timeout(timeout_s):
            while await self.step():
                pass

    async def _discover(self) -> None:
        now = self.clock()
        if now - self._discovered_at < self.options.discover_every_s:
            return
        self._discovered_at = now
        for stream in {text(s) for s in await self.redis.smembers(keys.EVENT_STREAMS)}:
            if stream not in self.streams:
                await ensure_group(self.redis, stream, self.options.group)
                self.streams.add(stream)

    async def drain(self, stream: str) -> int:
        """Commit and ack the stream's batches, up to `drain_batches` of them; returns how
        many entries moved (0: nothing to do).

        While a batch of new entries commits, the next one is read and decoded, so the reading
        and the database's work overlap. It is acked only after its own commit; if a commit
        fails, what was read ahead stays pending with us and is read again with the rest.
        """
        entries, fresh = await self._take(stream)
        batch = prepare(stream, entries)
        moved = 0
        for round_ in range(1, self.options.drain_batches + 1):
            if not entries:
                break
            self._dirty.add(stream)  # until acked: read again from our pending list
            ahead = None
            more = len(entries) >= self.options.batch and round_ < self.options.drain_batches
            if fresh and more and not self._stopping.is_set():
                ahead = asyncio.ensure_future(self._read_ahead(stream))
            try:
                result = await write_batch(self.engine, stream, batch, delivered_new=fresh)
            except BaseException:
                if ahead is not None:  # its entries, if read, are pending with us
                    with contextlib.suppress(Exception):
                        await ahead
                raise
            self._database_ok()
            await self.redis.xack(stream, self.options.group, *[i.encode() for i, _ in entries])
            self.metrics.events_ingested.inc(result.new)
            self.metrics.dead_letters.inc(result.dead)
            if self.on_commit is not None:
                self.on_commit(result)
            moved += len(entries)
            if ahead is None:
                if fresh:
                    self._dirty.discard(stream)
                break
            entries, batch = await ahead
        await self._refresh_status(stream, force=bool(moved))
        return moved

    async def _read_ahead(self, stream: str) -> tuple[list[Entry], Prepared]:
        reply = await self.redis.xreadgroup(
            self.options.group, self.consumer, {stream: ">"}, count=self.options.batch
        )
        entries = _entries(reply)
        return entries, prepare(stream, entries)

    async def _take(self, stream: str) -> tuple[list[Entry], bool]:
        """The next batch, and whether it is new entries (not ones pending with us)."""
        group, consumer, count = self.options.group, self.consumer, self.options.batch
        if stream in self._dirty:
            reply = await self.redis.xreadgroup(group, consumer, {stream: "0"}, count=count)
            entries = await self._drop_trimmed(stream, reply)
            if entries:
                return entries, False
            self._dirty.discard(stream)
        claimed = await self._autoclaim(stream)
        if claimed:
            return claimed, False
        reply = await self.redis.xreadgroup(group, consumer, {stream: ">"}, count=count)
        return _entries(reply), True

    async def _autoclaim(self, stream: str) -> list[Entry]:
        interval = max(0.05, self.options.claim_idle_ms / 2000)
        now = self.clock()
        if now - self._claimed_at.get(stream, float("-inf")) < interval:
            return []
        self._claimed_at[stream] = now
        reply = await self.redis.xautoclaim(
            stream,
            self.options.group,
            self.consumer,
            self.options.claim_idle_ms,
            start_id="0-0",
            count=self.options.batch,
        )
        claimed = [(text(i), f) for i, f in reply[1] if f is not None]
        if claimed:
            self._claimed_at.pop(stream)  # more may be waiting: look again next pass
        return claimed

    async def _refresh_status(self, stream: str, force: bool) -> None:
        now = self.clock()
        if not force and now - self._status_at.get(stream, float("-inf")) < (
            self.options.status_every_s
        ):
            return
        self._status_at[stream] = now
        if self.options.trim:
            await self.trim(stream)
        self._status[stream] = await stream_status(self.redis, stream, self.options.group)
        self._publish_status(now)

    async def trim(self, stream: str) -> str | None:
        """XTRIM MINID up to what every group has committed; returns the floor used."""
        floor = await trim_floor(self.redis, stream)
        if floor is not None:
            await self.redis.xtrim(stream, minid=floor, approximate=False)
        return floor

    def _publish_status(self, now: float) -> None:
        statuses = self._status.values()
        self.metrics.pending.set(sum(s.behind for s in statuses))
        oldest = [s.oldest_ms for s in statuses if s.oldest_ms is not None]
        self.metrics.ingest_lag.set(max(0.0, now - min(oldest) / 1000) if oldest else 0.0)

    def _database_ok(self) -> None:
        if not self.database_ok:
            log.warning("ledger database back, ingest resumed")
        self.database_ok = True
        self.metrics.database_up.set(1)

    def _database_failed(self, exc: BaseException) -> None:
        if self.database_ok:
            log.warning("ledger database unavailable, ingest paused", extra={"error": str(exc)})
        self.database_ok = False
        self.metrics.database_up.set(0)

    async def _drop_trimmed(self, stream: str, reply: Any) -> list[Entry]:
        """The live entries of a pending read; pending ids whose entry is gone are acked.

        Only the gateway's length cap can cut a pending entry (this trim never does): it is
        lost, so it is logged and acked rather than kept pending forever, which would hold
        the trim floor at it.
        """
        gone = [text(i) for _s, items in reply or [] for i, fields in items if fields is None]
        if gone:
            log.error("entries trimmed before commit", extra={"stream": stream, "ids": gone})
            await self.redis.xack(stream, self.options.group, *gone)
        return _entries(reply)


def _entries(reply: Any) -> list[Entry]:
    out: list[Entry] = []
    for _stream, items in reply or []:
        out.extend((text(entry_id), fields) for entry_id, fields in items if fields is not None)
    return out
