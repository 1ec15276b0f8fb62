"""SlidingWindowLimiter: several limits in one atomic call, exact under concurrency."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aredis

from ratelimit import Limit, SlidingWindowLimiter

T0 = 1_700_000_000_000
PER_IP = Limit(by="ip", limit=3, window_s=10)
PER_USER = Limit(by="user", limit=5, window_s=60)
IDS = {"ip": "10.0.0.1", "user": "u1"}


async def test_all_limits_admit_then_the_tightest_blocks(redis_client: aredis.Redis):
    limiter = SlidingWindowLimiter(redis_client, key_prefix="t:")
    results = [await limiter.hit("claim", [PER_IP, PER_USER], IDS, T0 + i) for i in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [(r.limit, r.remaining) for r in results[:3]] == [(PER_IP, 2), (PER_IP, 1), (PER_IP, 0)]
    assert (results[3].limit, results[3].retry_after_ms) == (PER_IP, 10_000 - 3)
    # The rejected hit was recorded nowhere: the user log holds the 3 admitted ones.
    assert await redis_client.llen("t:rl:claim:user:60:u1") == 3


async def test_rejection_waits_for_the_blocking_limit_that_frees_last(redis_client):
    limiter = SlidingWindowLimiter(redis_client)
    short, long = Limit(by="ip", limit=1, window_s=1), Limit(by="user", limit=1, window_s=5)
    assert (await limiter.hit("claim", [short, long], IDS, T0)).allowed
    result = await limiter.hit("claim", [short, long], IDS, T0 + 10)
    assert (result.allowed, result.limit, result.retry_after_ms) == (False, long, 4990)


async def test_limits_without_an_identity_are_skipped(redis_client: aredis.Redis):
    limiter = SlidingWindowLimiter(redis_client)
    one = Limit(by="device", limit=1, window_s=10)
    result = await limiter.hit("redeem", [one], {"ip": "10.0.0.1"}, T0)
    assert (result.allowed, result.limit, result.remaining) == (True, None, -1)
    assert await redis_client.dbsize() == 0


async def test_routes_count_separately(redis_client: aredis.Redis):
    limiter = SlidingWindowLimiter(redis_client)
    one = Limit(by="ip", limit=1, window_s=10)
    assert (await limiter.hit("claim", [one], IDS, T0)).allowed
    assert (await limiter.hit("redeem", [one], IDS, T0)).allowed
    assert not (await limiter.hit("claim", [one], IDS, T0)).allowed


async def test_two_clients_hammering_one_key_admit_exactly_the_limit(valkey_url, redis_client):
    limit = Limit(by="client", limit=25, window_s=60)
    second = aredis.Redis.from_url(valkey_url)
    try:
        limiters = [SlidingWindowLimiter(redis_client), SlidingWindowLimiter(second)]

        async def hammer(limiter: SlidingWindowLimiter, offset: int) -> int:
            results = [
                await limiter.hit("claim", [limit], {"client": "c1"}, T0 + offset + i)
                for i in range(40)
            ]
            return sum(r.allowed for r in results)

        tasks = [hammer(limiters[i % 2], i) for i in range(4)]
        admitted = await asyncio.gather(*tasks)
    finally:
        await second.aclose()
    assert sum(admitted) == 25
    assert await redis_client.llen("rl:claim:client:60:c1") == 25


async def test_keys_and_limits_must_pair_up(redis_client: aredis.Redis):
    limiter = SlidingWindowLimiter(redis_client)
    with pytest.raises(ValueError, match="pair up"):
        await limiter.hit_keys(["a"], [], T0)
