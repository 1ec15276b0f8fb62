"""SlidingWindowLimiter: several sliding-window limits decided in one atomic Redis call.

The gateway folds the same library into its own scripts (`sw_admit` in the claim script,
`sw_peek`/`sw_record` in the redeem guard); this wrapper is the standalone use of the same Lua,
for the other routes and for tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec
from redis.asyncio import Redis, RedisCluster

from ratelimit.rules import Limit, limit_key
from ratelimit.scripts import load_lua, sliding_window_source


class LimitResult(msgspec.Struct, frozen=True):
    """The outcome of one request against a set of limits.

    `limit` is the deciding limit: when allowed, the one with the fewest hits left (`remaining`
    after this request); when rejected, the blocking one that frees last. `retry_after_ms` is 0
    when allowed, else the ms until every blocking limit admits again (>= 1). No limits at all
    gives allowed with `limit` None and `remaining` -1.
    """

    allowed: bool
    limit: Limit | None
    remaining: int
    retry_after_ms: int


_UNLIMITED = LimitResult(allowed=True, limit=None, remaining=-1, retry_after_ms=0)


def limiter_source() -> str:
    """Return the full Lua of the limiter script: the library chunk, then its body."""
    return sliding_window_source() + "\n" + load_lua("ratelimit", "limiter.lua")


class SlidingWindowLimiter:
    """Checks all given limits and records a hit in each only when all admit; one round trip.

    `key_prefix` goes in front of every `limit_key` suffix; with Redis Cluster give it a hash
    tag (e.g. "gw:{rl}:") or pass keys that share one to `hit_keys`, since a call's keys must
    live in one slot.
    """

    def __init__(self, redis: Redis | RedisCluster, *, key_prefix: str = "") -> None:
        # register_script hashes once here; each call is EVALSHA, reloading after NOSCRIPT.
        self._script = redis.register_script(limiter_source())
        self._key_prefix = key_prefix

    async def hit(
        self, route: str, limits: Sequence[Limit], identities: Mapping[str, str], now_ms: int
    ) -> LimitResult:
        """Decide one request of `route`; limits whose dimension has no identity are skipped."""
        chosen = [limit for limit in limits if identities.get(limit.by)]
        keys = [self._key_prefix + limit_key(route, lim, identities[lim.by]) for lim in chosen]
        return await self.hit_keys(keys, chosen, now_ms)

    async def hit_keys(
        self, keys: Sequence[str], limits: Sequence[Limit], now_ms: int
    ) -> LimitResult:
        """Decide one request against limits[i] stored at keys[i] (distinct keys, same slot)."""
        if len(keys) != len(limits):
            raise ValueError("keys and limits must pair up")
        if not limits:
            return _UNLIMITED
        args: list[int] = [now_ms]
        for limit in limits:
            args += (limit.limit, limit.window_ms)
        allowed, index, remaining, retry_after_ms = await self._script(keys=keys, args=args)
        return LimitResult(
            allowed=allowed == 1,
            limit=limits[index - 1],
            remaining=remaining,
            retry_after_ms=retry_after_ms,
        )
