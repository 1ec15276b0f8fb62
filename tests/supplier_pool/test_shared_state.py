"""Breaker state shared through real Valkey: two pools stand in for two worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
import redis.asyncio as aredis

from supplier_pool.breaker import BreakerConfig, State
from supplier_pool.pool import Delivered, SupplierPool, Unavailable
from supplier_pool.shared_state import BREAKERS_KEY, BreakerSync
from tests.supplier_pool.helpers import Sim
from tests.support.waiting import eventually

TRIP_FAST = BreakerConfig(window_size=4, minimum_calls=2, wait_in_open_s=30.0)
MakePool = Callable[..., SupplierPool]
Workers = tuple[SupplierPool, BreakerSync, SupplierPool, BreakerSync]


@contextlib.asynccontextmanager
async def syncing(redis: aredis.Redis, pool: SupplierPool) -> AsyncIterator[BreakerSync]:
    sync = BreakerSync(redis, pool)  # the default interval: the 1 s promise is about it
    task = asyncio.create_task(sync.run())
    try:
        yield sync
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def workers(
    sim: Sim, make_pool: MakePool, redis_client: aredis.Redis
) -> AsyncIterator[Workers]:
    specs = [sim.spec("alpha"), sim.spec("beta", priority=2)]
    one, two = (
        make_pool(specs, breaker_config=TRIP_FAST),
        make_pool(specs, breaker_config=TRIP_FAST),
    )
    async with syncing(redis_client, one) as sync_one, syncing(redis_client, two) as sync_two:
        yield one, sync_one, two, sync_two


async def test_forced_open_in_one_worker_stops_calls_from_the_other(
    sim: Sim, workers: Workers
) -> None:
    one, sync_one, two, _ = workers
    await sync_one.force_open("alpha")
    assert one.breaker("alpha").state is State.FORCED_OPEN  # applied locally at once
    await eventually(lambda: two.breaker("alpha").state is State.FORCED_OPEN, within_s=1.0)
    result = await two.deliver("o-1", "s", "a", ["alpha", "beta"])
    assert isinstance(result, Delivered) and result.supplier_id == "beta"
    assert await sim.calls("alpha") == 0


async def test_forced_closed_and_reset_reach_the_other_worker(workers: Workers) -> None:
    one, sync_one, two, _ = workers
    await sync_one.force_closed("alpha")
    await eventually(lambda: two.breaker("alpha").state is State.FORCED_CLOSED)
    two.breaker("alpha").on_failure(0.1)
    await sync_one.reset("alpha")
    assert one.breaker("alpha").state is State.CLOSED
    await eventually(lambda: two.breaker("alpha").state is State.CLOSED)
    assert two.breaker("alpha").snapshot()["calls"] == 0


async def test_a_trip_in_one_worker_opens_the_other(sim: Sim, workers: Workers) -> None:
    one, _, two, _ = workers
    await sim.set("alpha", error_rate=1.0)
    for i in range(2):
        await one.deliver(f"o-{i}", "s", "a", ["alpha"])
    assert one.breaker("alpha").state is State.OPEN
    await eventually(lambda: two.breaker("alpha").state is State.OPEN, within_s=1.0)
    remaining = two.breaker("alpha").snapshot()["open_remaining_s"]
    assert TRIP_FAST.wait_in_open_s - 1 < remaining <= TRIP_FAST.wait_in_open_s
    calls = await sim.calls("alpha")
    assert await two.deliver("o-9", "s", "a", ["alpha"]) == Unavailable()
    assert await sim.calls("alpha") == calls


async def test_a_trip_is_published_once_and_not_echoed(
    workers: Workers, redis_client: aredis.Redis
) -> None:
    one, _, two, _ = workers
    one.breaker("alpha").transition_to(State.OPEN)
    await eventually(lambda: two.breaker("alpha").state is State.OPEN)
    first = await redis_client.hget(BREAKERS_KEY, "alpha")
    await asyncio.sleep(0.2)  # several sync ticks of both workers
    assert await redis_client.hget(BREAKERS_KEY, "alpha") == first
    assert one.breaker("alpha").state is State.OPEN


async def test_a_trip_never_overrides_a_forced_state(
    make_pool: MakePool, sim: Sim, redis_client: aredis.Redis
) -> None:
    one = make_pool([sim.spec("alpha")], breaker_config=TRIP_FAST)
    two = make_pool([sim.spec("alpha")], breaker_config=TRIP_FAST)
    sync_one, sync_two = BreakerSync(redis_client, one), BreakerSync(redis_client, two)
    await sync_one.force_closed("alpha")
    two.breaker("alpha").transition_to(State.OPEN)  # a trip that raced the admin
    await sync_two.sync_once()
    assert two.breaker("alpha").state is State.FORCED_CLOSED
    entry = orjson.loads(await redis_client.hget(BREAKERS_KEY, "alpha"))
    assert entry["forced"] == "closed"


async def test_a_later_trip_wins_an_earlier_one(
    make_pool: MakePool, sim: Sim, redis_client: aredis.Redis
) -> None:
    one = make_pool([sim.spec("alpha")], breaker_config=TRIP_FAST)
    sync = BreakerSync(redis_client, one)
    late = time.time() + 100
    await redis_client.hset(BREAKERS_KEY, "alpha", orjson.dumps({"open_until": late}))
    one.breaker("alpha").transition_to(State.OPEN)  # opens for 30 s only
    await sync.sync_once()
    entry = orjson.loads(await redis_client.hget(BREAKERS_KEY, "alpha"))
    assert entry["open_until"] == pytest.approx(late)
    assert one.breaker("alpha").snapshot()["open_remaining_s"] > 90


async def test_malformed_and_foreign_entries_are_ignored(
    make_pool: MakePool, sim: Sim, redis_client: aredis.Redis
) -> None:
    pool = make_pool([sim.spec("alpha")])
    await redis_client.hset(
        BREAKERS_KEY, mapping={"alpha": b"{not json", "other": b'{"forced": "open"}'}
    )
    await BreakerSync(redis_client, pool).sync_once()
    assert pool.breaker("alpha").state is State.CLOSED


async def test_admin_helpers_refuse_unknown_suppliers_without_writing(
    make_pool: MakePool, sim: Sim, redis_client: aredis.Redis
) -> None:
    sync = BreakerSync(redis_client, make_pool([sim.spec("alpha")]))
    with pytest.raises(KeyError):
        await sync.force_open("nobody")
    assert await redis_client.exists(BREAKERS_KEY) == 0


async def test_run_survives_redis_errors_and_stops_on_cancel(
    make_pool: MakePool, sim: Sim, valkey_url: str
) -> None:
    broken = aredis.Redis.from_url(valkey_url.rsplit(":", 1)[0] + ":1/0")  # nothing listens
    try:
        task = asyncio.create_task(
            BreakerSync(broken, make_pool([sim.spec("alpha")]), interval_s=0.01).run()
        )
        await asyncio.sleep(0.1)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await broken.aclose()


async def openings(redis: aredis.Redis, stream: str) -> list[tuple[str, str]]:
    entries = await redis.xrange(stream)
    assert all(fields[b"type"] == b"supplier.breaker_opened" for _, fields in entries)
    return [(f[b"supplier"].decode(), f[b"from_state"].decode()) for _, f in entries]


async def test_an_opening_is_one_event_however_many_workers_trip_during_it(
    make_pool: MakePool, sim: Sim, redis_client: aredis.Redis
) -> None:
    stream = "gw:{suppliers}:events"
    config = BreakerConfig(window_size=4, minimum_calls=2, wait_in_open_s=0.3)
    one, two = (make_pool([sim.spec("alpha")], breaker_config=config) for _ in range(2))
    syncs = [BreakerSync(redis_client, pool, events_key=stream) for pool in (one, two)]
    one.breaker("alpha").transition_to(State.OPEN)
    two.breaker("alpha").transition_to(State.OPEN)  # before it heard of the first trip
    for _ in range(2):
        for sync in syncs:
            await sync.sync_once()
    assert await openings(redis_client, stream) == [("alpha", "closed")]
    await asyncio.sleep(0.35)  # the opening is over: the next trip is a new one
    breaker = one.breaker("alpha")
    assert breaker.try_acquire() and breaker.state is State.HALF_OPEN
    breaker.on_failure(0.01)  # the probe failed
    assert breaker.state is State.OPEN
    await syncs[0].sync_once()
    assert await openings(redis_client, stream) == [("alpha", "closed"), ("alpha", "half_open")]
    _, fields = (await redis_client.xrange(stream))[-1]
    assert fields[b"ts"].decode().endswith("Z")


async def test_no_event_without_an_events_key_nor_for_a_forced_state(
    make_pool: MakePool, sim: Sim, redis_client: aredis.Redis
) -> None:
    stream = "gw:{suppliers}:events"
    pool = make_pool([sim.spec("alpha")], breaker_config=TRIP_FAST)
    pool.breaker("alpha").transition_to(State.OPEN)
    await BreakerSync(redis_client, pool).sync_once()
    assert await redis_client.hget(BREAKERS_KEY, "alpha") is not None  # published
    other = make_pool([sim.spec("alpha")], breaker_config=TRIP_FAST)
    sync = BreakerSync(redis_client, other, events_key=stream)
    await sync.force_open("alpha")
    await sync.sync_once()
    assert await redis_client.exists(stream) == 0
