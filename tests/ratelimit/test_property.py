"""Properties of sliding_window.lua on the real Valkey.

1. The Lua and the memory.py twin always agree: every answer and every stored log.
2. Against a plain list of every admitted hit (an oracle that never trims), the lazy trim
   changes no decision: a hit is admitted iff fewer than `limit` admitted hits lie inside its
   window, so no window of `window_ms` ever admits more than `limit`; a rejection's count and
   retry_after are exact; an admission's count is an upper bound of the in-window hits.
3. field_window.lua (a log in a string, one per identity, serving every limit of its
   dimension) decides as that oracle, limit by limit: the same admissions, the same refusing
   limit, the same retry-after, with callers' clocks stepping back by less than FW_SKEW_MS.
"""

from __future__ import annotations

from typing import Any

import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ratelimit import SlidingWindowLog
from tests.ratelimit.conftest import FW_OPS, SW_OPS

T0 = 1_700_000_000_000

trim_at = st.one_of(st.none(), st.integers(0, 7))  # None: sw_peek's default (the limit)

# Windows stay >= 10 s so Redis's real-time key expiry never fires while an example runs.
op = st.tuples(
    st.sampled_from(["a", "b"]),
    st.one_of(
        st.sampled_from([0, 1, 9_999, 10_000, 10_001, 20_000]),  # land exactly on edges
        st.integers(-300, 0),  # a caller's clock stepping back
        st.integers(0, 25_000),
    ),
    st.sampled_from(["peek", "record", "hit", "admit"]),
    st.integers(1, 6),
    st.sampled_from([10_000, 20_000]),
    trim_at,
)


def sw_args(name: str, limit: int, window_ms: int, now_ms: int, trim: int | None) -> list[Any]:
    return [name, limit, window_ms, now_ms, "" if trim is None else trim]


def twin_call(twin: SlidingWindowLog, op: str, key: str, *args: Any) -> list[int]:
    limit, window_ms, now_ms, trim = args
    if op == "record":
        twin.record(key, window_ms, now_ms)
        return []
    if op == "admit":
        return list(twin.admit(key, limit, window_ms, now_ms))
    count, retry_after_ms = twin.peek(key, limit, window_ms, now_ms, trim)
    if op == "hit" and count < limit:
        twin.record(key, window_ms, now_ms, count)
    return [count, retry_after_ms]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=60))
@example(  # a clock step back must not put an older hit after a newer one
    ops=[
        ("a", 0, "record", 1, 10_000, None),
        ("a", -300, "record", 1, 10_000, None),
        ("a", 10_100, "peek", 1, 10_000, None),
    ]
)
@example(  # a burst, then the exact edge of the window
    ops=[
        ("a", 0, "hit", 2, 10_000, None),
        ("a", 0, "hit", 2, 10_000, None),
        ("a", 9_999, "hit", 2, 10_000, None),
        ("a", 1, "hit", 2, 10_000, None),
    ]
)
@example(  # stale hits below the limit stay until the log is full, then go in one trim
    ops=[
        ("a", 0, "hit", 3, 10_000, None),
        ("a", 1, "hit", 3, 10_000, None),
        ("a", 20_000, "hit", 3, 10_000, None),
        ("a", 0, "hit", 3, 10_000, None),
        ("a", 1, "hit", 3, 10_000, 0),
    ]
)
def test_lua_and_twin_agree(sync_redis: redis.Redis, ops: list[Any]) -> None:
    sync_redis.flushdb()
    script = sync_redis.register_script(SW_OPS)
    twin, now = SlidingWindowLog(), T0
    for key, step, name, limit, window_ms, trim in ops:
        now += step
        expected = twin_call(twin, name, key, limit, window_ms, now, trim)
        got = script(keys=[key], args=sw_args(name, limit, window_ms, now, trim))
        assert got == expected
        assert [int(t) for t in sync_redis.lrange(key, 0, -1)] == twin.hits(key)


WINDOWS = {"a": 10_000, "b": 12_000}  # >= 10 s: no real-time expiry, as above


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limits=st.fixed_dictionaries({"a": st.integers(1, 6), "b": st.integers(1, 6)}),
    hits=st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.one_of(st.sampled_from([0, 1, 9_999, 10_000, 12_000]), st.integers(0, 6_000)),
            trim_at,
        ),
        min_size=1,
        max_size=80,
    ),
)
def test_lazy_trim_decides_as_an_exact_count(
    sync_redis: redis.Redis, limits: dict[str, int], hits: list[Any]
) -> None:
    sync_redis.flushdb()
    script = sync_redis.register_script(SW_OPS)
    admitted: dict[str, list[int]] = {"a": [], "b": []}
    now = T0
    for key, step, trim in hits:
        now += step
        limit, window = limits[key], WINDOWS[key]
        count, retry_after_ms = script(keys=[key], args=sw_args("hit", limit, window, now, trim))
        inside = [t for t in admitted[key] if t > now - window]
        if len(inside) < limit:
            assert (retry_after_ms, len(inside) <= count < limit) == (0, True)
            admitted[key].append(now)
        else:
            # The slot frees when the hit at index len(inside) - limit leaves the window.
            assert count == len(inside)
            assert retry_after_ms == inside[len(inside) - limit] + window - now >= 1
    for key, times in admitted.items():
        for t in times:
            assert sum(t - WINDOWS[key] < s <= t for s in times) <= limits[key]


def admit_hits(max_size: int) -> st.SearchStrategy[list[tuple[int, int]]]:
    """(clock step ms, limit) pairs: steps at the step and window edges, a caller's clock
    stepping back, and anything between."""
    return st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from([0, 1, 1_250, 9_999, 10_000]),  # step and window edges
                st.integers(-300, 0),  # a caller's clock stepping back
                st.integers(0, 4_000),
            ),
            st.integers(1, 5),
        ),
        min_size=1,
        max_size=max_size,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hits=admit_hits(60))
def test_admit_answers_stores_and_expires_as_peek_then_record(
    sync_redis: redis.Redis, hits: list[Any]
) -> None:
    """sw_admit on one key and the peek-then-record pair ("hit") on another, fed the same
    hits: the same answers, the same logs and the same expiry (up to the ms between calls)."""
    sync_redis.flushdb()
    script = sync_redis.register_script(SW_OPS)
    now = T0
    for step, limit in hits:
        now += step
        by_pair = script(keys=["pair"], args=sw_args("hit", limit, 10_000, now, None))
        by_admit = script(keys=["admit"], args=sw_args("admit", limit, 10_000, now, None))
        assert by_admit == by_pair
        assert sync_redis.lrange("admit", 0, -1) == sync_redis.lrange("pair", 0, -1)
        assert abs(sync_redis.pttl("admit") - sync_redis.pttl("pair")) <= 50


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hits=admit_hits(40))
def test_an_admit_told_the_newest_hit_answers_and_stores_as_one_that_reads_it(
    sync_redis: redis.Redis, hits: list[Any]
) -> None:
    """Two admits in one call, the second handed the newest hit the first left (a batch of
    claims from one address), against two calls that each read it: the same answers, logs
    and expiry, whether the first was admitted or refused."""
    sync_redis.flushdb()
    script = sync_redis.register_script(SW_OPS)
    now = T0
    for step, limit in hits:
        now += step
        apart = [
            *script(keys=["apart"], args=sw_args("admit", limit, 10_000, now, None)),
            *script(keys=["apart"], args=sw_args("admit", limit, 10_000, now, None)),
        ]
        told = script(keys=["told"], args=sw_args("admit_twice", limit, 10_000, now, None))
        assert told == apart
        assert sync_redis.lrange("told", 0, -1) == sync_redis.lrange("apart", 0, -1)
        assert abs(sync_redis.pttl("told") - sync_redis.pttl("apart")) <= 50


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limits=st.lists(
        st.tuples(st.integers(1, 6), st.sampled_from([10_000, 12_000, 30_000])),
        min_size=1,
        max_size=2,
        unique_by=lambda pair: pair[1],  # the configuration allows one limit per window
    ),
    steps=st.lists(
        st.one_of(
            st.sampled_from([0, 1, 9_999, 10_000, 12_000, 30_000]),  # window edges
            st.integers(-300, 0),  # a caller's clock stepping back (< FW_SKEW_MS)
            st.integers(0, 8_000),
        ),
        min_size=1,
        max_size=60,
    ),
)
@example(  # the older hit decides for the smaller limit, the newer for the larger
    limits=[(1, 10_000), (3, 30_000)], steps=[0, 10_000, 10_000, 10_000, 1, 20_000]
)
@example(  # a hit that left the window on the newest clock is still inside on an older one
    limits=[(3, 30_000)], steps=[0, 0, 9_999, 10_000, 12_000, 8_000, -1]
)
def test_field_log_decides_as_an_exact_count_per_limit(
    sync_redis: redis.Redis, limits: list[tuple[int, int]], steps: list[int]
) -> None:
    sync_redis.flushdb()
    sync_redis.hset("claimant", "f", "0")
    script = sync_redis.register_script(FW_OPS)
    args: list[int] = [value for pair in limits for value in pair]
    admitted: list[int] = []  # every admitted hit, at max(now, newest) as the log stores it
    now = T0
    for step in steps:
        now += step
        expected = [0, 0]
        for index, (limit, window) in enumerate(limits, start=1):
            inside = [t for t in admitted if t > now - window]
            if len(inside) >= limit:
                expected = [inside[len(inside) - limit] + window - now, index]
                break
        assert script(keys=["claimant"], args=[now, *args]) == expected
        if expected == [0, 0]:
            admitted.append(max([now, *admitted]))
    keep = max(limit for limit, _ in limits)
    stored = sync_redis.hget("claimant", "f").decode().split(",")
    assert stored[0] == "0" and len(stored) - 1 <= keep  # the counter, then at most keep hits
