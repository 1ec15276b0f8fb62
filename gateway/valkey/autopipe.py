"""Auto-pipelining: the commands issued in one event-loop turn go out in a few writes.

redis-py spends more CPU per call (argument encoding, pool checkout, retry and timeout
wrappers, one socket write and read per command) than aiohttp spends on the whole request. On
the claim path this client replaces it: one connection per worker, commands queued and flushed
together every FLUSH_AT commands and at the end of the loop turn, replies parsed by hiredis in
order. Valkey runs commands one at a time anyway, so one busy connection loses nothing and
saves a syscall per claim.

Failure handling keeps the gateway's contract: a connection that cannot be made fails its
calls with NotSent; one that is lost, or whose oldest call has waited `timeout_s`, fails every
waiting call with ConnectionError or TimeoutError (→ 503 unavailable, outcome unknown for
calls already written); the next call reconnects. A "not ready" reply (-LOADING, ...) is
redis-py's BusyLoadingError or a ResponseError that `calls.not_ready` recognises. A function
the server lost (Valkey restarted) loads the library and retries once. Single-node URLs only;
a cluster uses redis-py.

Under Sentinel (`redis+sentinel://`) each connection is made to the primary the Sentinels name
at that moment; the connection is dropped, so the next call reconnects to the new primary,
when a READONLY reply says the node was demoted to a replica, or when the Sentinels (asked
every SENTINEL_CHECK_S) name another primary. With a durability mode that waits (fsync,
replica), each write holding a `fcall_kept` call ends with one wait (WAITAOF or WAIT) that
every such call in it shares, and a call's deadline grows by durability_timeout_ms.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from hiredis import pack_command  # RESP encoding in C, cheaper than redis-py's Python loop
from redis.exceptions import BusyLoadingError, ConnectionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from gateway.valkey import sentinel
from gateway.valkey.calls import NotSent, function_lost
from gateway.valkey.durability import Durability


class _Protocol(asyncio.Protocol):
    def __init__(self, client: AutoPipeline) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.on_lost(ConnectionError(f"connection to redis lost: {exc or 'closed'}"))


# A batch is written once it holds this many commands, not only at the end of the loop
# iteration, so Valkey starts on the first commands while the worker still parses the requests
# behind them (the measurements behind 16: docs/benchmarks.md).
FLUSH_AT = 16

# Under Sentinel, how often a connected worker asks whether its node is still the primary.
SENTINEL_CHECK_S = 1.0


class AutoPipeline:
    """One pipelined connection to a single Redis/Valkey node."""

    def __init__(self, url: str, timeout_s: float, durability: Durability | None = None) -> None:
        self._hello: list[tuple[Any, ...]] = []
        self._sentinel: sentinel.SentinelUrl | None = None
        self._sentinel_due = 0.0
        self._asking: asyncio.Future[None] | None = None
        if url.startswith(sentinel.SCHEME):
            self._sentinel = found = sentinel.parse(url)
            self._unix, self._host, self._port = None, "", 0  # asked at each connect
            if found.password:
                self._hello.append(("AUTH", found.username or "default", found.password))
        else:
            parts = urlsplit(url)
            self._unix = parts.path if parts.scheme == "unix" else None
            self._host = parts.hostname or "127.0.0.1"
            self._port = parts.port or 6379
            db = parts.path.lstrip("/") if parts.scheme != "unix" else ""
            if parts.password:
                user = unquote(parts.username) if parts.username else "default"
                self._hello.append(("AUTH", user, unquote(parts.password)))
            if db and db != "0":
                self._hello.append(("SELECT", db))
        self._timeout_s = timeout_s
        durability = durability or Durability()
        self._durability = durability
        # The wait blocks the connection until it is answered: every call may wait that long.
        self._deadline_s = timeout_s + durability.extra_s
        self._wait = pack_command(durability.command) if durability.command else b""
        self._unacked: list[asyncio.Future[Any]] = []  # kept calls in the outbox, to share a wait
        self._transport: asyncio.Transport | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._reader = hiredis.Reader()
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._queued_at: collections.deque[float] = collections.deque()  # per waiting call
        self._outbox: list[bytes] = []
        self._flush_scheduled = False
        self._watchdog: asyncio.TimerHandle | None = None

    @staticmethod
    def supports(url: str) -> bool:
        """Plain single-node URLs and Sentinel; TLS and clusters stay with redis-py."""
        return url.startswith(("redis://", "unix://", sentinel.SCHEME))

    async def execute(self, *args: Any) -> Any:
        """Send one command in the current batch and await its reply."""
        if self._transport is None:
            await self._connect()
        return await self._enqueue(pack_command(args))

    async def fcall(
        self, function: str, library: str, keys: list[Any], args: list[Any], flush: bool = False
    ) -> Any:
        """FCALL, loading `library` (its source) once if the server lost it. `flush` writes the
        batch at once: the call is a batch of decisions itself (gateway/claim_batch.py)."""
        if self._transport is None:
            await self._connect()
        command = pack_command(("FCALL", function, len(keys), *keys, *args))
        try:
            return await self._enqueue(command, flush)
        except ResponseError as error:
            if not function_lost(error):
                raise
        await self.execute("FUNCTION", "LOAD", "REPLACE", library)
        return await self._enqueue(command)

    async def fcall_kept(
        self, function: str, library: str, keys: list[Any], args: list[Any], flush: bool = False
    ) -> Any:
        """As `fcall`, answered once the durability wait that follows it says it is kept."""
        if self._transport is None:
            await self._connect()
        command = pack_command(("FCALL", function, len(keys), *keys, *args))
        try:
            return await self._kept(command, flush)
        except ResponseError as error:
            if not function_lost(error):
                raise
        await self.execute("FUNCTION", "LOAD", "REPLACE", library)
        return await self._kept(command, False)

    async def _kept(self, command: bytes, flush: bool) -> Any:
        acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._unacked.append(acked)  # before enqueueing: a flush it triggers adds the wait
        try:
            reply = await self._enqueue(command, flush)
        except BaseException:
            _drop(acked)
            raise
        try:
            acks = await acked
        except ResponseError as error:  # the wait itself was refused
            acks = error
        self._durability.check(acks)
        return reply

    def _send_wait(self) -> None:
        """One wait after the kept calls in the outbox; its reply settles each of them."""
        members, self._unacked = self._unacked, []
        wait: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        wait.add_done_callback(functools.partial(_settle, members))
        self._waiting.append(wait)
        self._queued_at.append(time.monotonic())
        self._outbox.append(self._wait)

    def _enqueue(self, command: bytes, flush: bool = False) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append(future)
        self._queued_at.append(time.monotonic())
        self._outbox.append(command)
        if flush or len(self._outbox) >= FLUSH_AT:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._scheduled_flush)
        return future

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        if self._transport is not None and self._outbox:
            if self._unacked:
                self._send_wait()
            self._transport.write(b"".join(self._outbox))
        self._outbox.clear()

    async def _connect(self) -> None:
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            async with asyncio.timeout(self._timeout_s):
                if self._sentinel is not None:
                    found = self._sentinel
                    self._host, self._port = await sentinel.primary_address(
                        found.sentinels, found.service, self._timeout_s / 2
                    )
                if self._unix:
                    transport, _ = await loop.create_unix_connection(
                        lambda: _Protocol(self), self._unix
                    )
                else:
                    transport, _ = await loop.create_connection(
                        lambda: _Protocol(self), self._host, self._port
                    )
            self._reader = hiredis.Reader()
            self._transport = transport
            for command in self._hello:
                self._enqueue(pack_command(command))
            self._watchdog = loop.call_later(self._watch_every_s, self._check_progress)
            self._connecting.set_result(None)
        except (OSError, TimeoutError) as exc:  # the builtin: connect or asyncio.timeout
            error = NotSent(f"cannot connect to redis: {exc!r}")
            self._connecting.set_exception(error)
            self._connecting.exception()  # retrieved: waiters get it through shield
            raise error from exc
        finally:
            self._connecting = None

    @property
    def _watch_every_s(self) -> float:
        # Often enough that a call's 503 comes within timeout_s + 100 ms (SPEC 3.1).
        return min(0.05, self._timeout_s / 4)

    def _check_progress(self) -> None:
        """A connection whose oldest call has waited its deadline is given up; under Sentinel,
        the primary is asked for again every SENTINEL_CHECK_S."""
        if self._transport is None:
            return
        now = time.monotonic()
        if self._queued_at and now - self._queued_at[0] >= self._deadline_s:
            transport = self._transport
            self.on_lost(RedisTimeout("redis did not answer in time"))
            transport.abort()
            return
        if self._sentinel is not None and now >= self._sentinel_due and self._asking is None:
            self._sentinel_due = now + SENTINEL_CHECK_S
            self._asking = asyncio.ensure_future(self._still_primary(self._transport))
        self._watchdog = asyncio.get_running_loop().call_later(
            self._watch_every_s, self._check_progress
        )

    async def _still_primary(self, transport: asyncio.Transport) -> None:
        """Leave a node the Sentinels no longer name: a primary demoted in a failover it
        survived keeps taking writes until Sentinel turns it into a replica, seconds later."""
        assert self._sentinel is not None
        found = self._sentinel
        try:
            address = await sentinel.primary_address(
                found.sentinels, found.service, self._timeout_s / 2
            )
        except OSError:
            return  # no Sentinel answers: keep the connection that works
        finally:
            self._asking = None
        if self._transport is transport and address != (self._host, self._port):
            self.on_lost(ConnectionError("the Sentinels name another primary"))
            transport.abort()

    def on_data(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            reply = self._reader.gets()
            if reply is False:
                return
            future = self._waiting.popleft()
            self._queued_at.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                text = str(reply)
                loading = text.startswith("LOADING")
                future.set_exception(BusyLoadingError(text) if loading else ResponseError(text))
                if text.startswith("READONLY") and self._transport is not None:
                    # A demoted primary: the next call asks the Sentinels for the new one.
                    transport = self._transport
                    self.on_lost(ConnectionError("redis primary was demoted to a replica"))
                    transport.abort()
                    return
            else:
                future.set_result(reply)

    def on_lost(self, error: Exception) -> None:
        self._transport = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        waiting, self._waiting = self._waiting, collections.deque()
        self._queued_at.clear()
        # Calls still in the outbox were never written: they certainly changed nothing.
        unsent = len(self._outbox)
        self._outbox.clear()
        unacked, self._unacked = self._unacked, []
        _settle(unacked, None, NotSent(str(error)))
        for i, future in enumerate(waiting):
            if not future.done():
                never = i >= len(waiting) - unsent
                future.set_exception(NotSent(str(error)) if never else error)

    async def aclose(self) -> None:
        if self._asking is not None:
            self._asking.cancel()
        if self._transport is not None:
            transport = self._transport
            self.on_lost(ConnectionError("closed"))
            transport.close()


def _settle(
    members: list[asyncio.Future[Any]],
    wait: asyncio.Future[Any] | None,
    error: BaseException | None = None,
) -> None:
    """Give each kept call the reply of its wait (or the wait's error)."""
    if wait is not None:
        error = wait.exception()
    for member in members:
        if member.done():
            continue
        if error is not None:
            member.set_exception(error)
        else:
            member.set_result(wait.result() if wait is not None else None)


def _drop(acked: asyncio.Future[Any]) -> None:
    """A kept call that failed no longer waits for its acknowledgement."""
    if acked.done():
        if not acked.cancelled():
            acked.exception()  # retrieved: its call's own error is the one raised
    else:
        acked.cancel()
