"""How many calls a dead supplier gets before a breaker opens: the consecutive-failure rule,
and a trip shared through real Valkey that never replays an admin reset already applied."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis.asyncio as aredis

from supplier_pool.breaker import BreakerConfig, CircuitBreaker, State
from supplier_pool.pool import SupplierPool
from supplier_pool.shared_state import BreakerSync
from tests.supplier_pool.helpers import FakeClock, Sim

TRIP_FAST = BreakerConfig(window_size=4, minimum_calls=2, wait_in_open_s=30.0)


def healthy_then_dead(breaker: CircuitBreaker, successes: int, failures: int) -> None:
    for _ in range(successes):
        breaker.on_success(0.01)
    for _ in range(failures):
        breaker.on_failure(0.01)


def test_a_supplier_that_dies_after_a_full_healthy_window_opens_after_the_streak() -> None:
    config = BreakerConfig()  # window 20 at 50 %: the rate alone would need 10 failures
    breaker = CircuitBreaker("alpha", config, FakeClock())
    healthy_then_dead(breaker, config.window_size, config.consecutive_failures - 1)
    assert breaker.state is State.CLOSED
    breaker.on_failure(0.01)
    assert breaker.state is State.OPEN


def test_a_success_ends_the_streak() -> None:
    config = BreakerConfig(consecutive_failures=3)
    breaker = CircuitBreaker("alpha", config, FakeClock())
    healthy_then_dead(breaker, config.window_size, 2)
    healthy_then_dead(breaker, 1, 2)
    assert breaker.state is State.CLOSED
    assert breaker.snapshot()["failure_rate"] == 4 / config.window_size


def test_in_a_failure_streak_no_more_calls_go_out_than_could_end_it() -> None:
    config = BreakerConfig()
    breaker = CircuitBreaker("alpha", config, FakeClock())
    healthy_then_dead(breaker, config.window_size, 0)
    assert all(breaker.try_acquire() for _ in range(3))  # healthy: no limit
    breaker.on_failure(0.01)  # streak 1, two calls still out
    allowed = sum(breaker.try_acquire() for _ in range(10))
    assert allowed == config.consecutive_failures - 1 - 2
    assert breaker.outstanding == config.consecutive_failures - 1
    for _ in range(breaker.outstanding):
        breaker.on_failure(0.01)
    assert breaker.state is State.OPEN
    assert not breaker.try_acquire()


def test_a_success_in_the_streak_lifts_the_limit() -> None:
    breaker = CircuitBreaker("alpha", BreakerConfig(), FakeClock())
    assert breaker.try_acquire() and breaker.try_acquire()
    breaker.on_failure(0.01)
    breaker.on_success(0.01)
    assert all(breaker.try_acquire() for _ in range(20))


def test_a_probe_after_the_open_wait_is_counted_once() -> None:
    clock = FakeClock()
    config = BreakerConfig(wait_in_open_s=1.0)
    breaker = CircuitBreaker("alpha", config, clock)
    healthy_then_dead(breaker, 0, config.consecutive_failures)
    clock.advance(1.5)
    assert breaker.try_acquire() and breaker.state is State.HALF_OPEN
    assert breaker.outstanding == 1


def test_a_forced_closed_breaker_never_opens_on_a_streak() -> None:
    breaker = CircuitBreaker("alpha", BreakerConfig(), FakeClock())
    breaker.force_closed()
    healthy_then_dead(breaker, 0, 50)
    assert breaker.state is State.FORCED_CLOSED


def test_consecutive_failures_must_be_positive() -> None:
    with pytest.raises(ValueError, match="consecutive_failures"):
        BreakerConfig(consecutive_failures=0)


# Unix seconds whose 14-significant-digit rendering (cjson's, in breakers.lua) rounds up.
ROUNDS_UP = 1796393098.46729615


async def test_a_published_trip_does_not_replay_an_applied_reset(
    sim: Sim, make_pool: Callable[..., SupplierPool], redis_client: aredis.Redis
) -> None:
    specs = [sim.spec("alpha")]
    one = make_pool(specs, breaker_config=TRIP_FAST)
    two = make_pool(specs, breaker_config=TRIP_FAST)
    sync_one = BreakerSync(redis_client, one, wall_clock=lambda: ROUNDS_UP)
    sync_two = BreakerSync(redis_client, two, wall_clock=lambda: ROUNDS_UP)
    await sync_one.reset("alpha")
    await sync_two.sync_once()  # the other worker applies the reset
    for pool in (one, two):
        healthy_then_dead(pool.breaker("alpha"), 0, TRIP_FAST.minimum_calls)
        assert pool.breaker("alpha").state is State.OPEN
    for sync in (sync_one, sync_two, sync_one, sync_two):
        await sync.sync_once()  # each publishes its trip, through the script, and reads back
    for pool in (one, two):
        breaker = pool.breaker("alpha")
        # Never closed again in between: a replayed reset would have emptied the window.
        assert breaker.state is State.OPEN
        assert breaker.snapshot()["calls"] == TRIP_FAST.minimum_calls
