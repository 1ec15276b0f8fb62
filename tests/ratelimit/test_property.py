"""Property: sliding_window.lua on the real Valkey and the memory.py twin always agree."""

from __future__ import annotations

from typing import Any

import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ratelimit import SlidingWindowLog
from tests.ratelimit.conftest import SW_OPS

T0 = 1_700_000_000_000

# Windows stay >= 10 s so Redis's real-time key expiry never fires while an example runs.
op = st.tuples(
    st.sampled_from(["a", "b"]),
    st.one_of(
        st.sampled_from([0, 1, 9_999, 10_000, 10_001, 20_000]),  # land exactly on edges
        st.integers(-300, 0),  # a caller's clock stepping back
        st.integers(0, 25_000),
    ),
    st.sampled_from(["peek", "record", "hit"]),
    st.integers(1, 6),
    st.sampled_from([10_000, 20_000]),
)


def twin_call(twin: SlidingWindowLog, op: str, key: str, *args: int) -> list[int]:
    limit, window_ms, now_ms = args
    if op == "record":
        twin.record(key, window_ms, now_ms)
        return []
    count, retry_after_ms = twin.peek(key, limit, window_ms, now_ms)
    if op == "hit" and count < limit:
        twin.record(key, window_ms, now_ms)
    return [count, retry_after_ms]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=60))
@example(  # a clock step back must not put an older hit after a newer one
    ops=[
        ("a", 0, "record", 1, 10_000),
        ("a", -300, "record", 1, 10_000),
        ("a", 10_100, "peek", 1, 10_000),
    ]
)
@example(  # a burst, then the exact edge of the window
    ops=[
        ("a", 0, "hit", 2, 10_000),
        ("a", 0, "hit", 2, 10_000),
        ("a", 9_999, "hit", 2, 10_000),
        ("a", 1, "hit", 2, 10_000),
    ]
)
def test_lua_and_twin_agree(sync_redis: redis.Redis, ops: list[Any]) -> None:
    sync_redis.flushdb()
    script = sync_redis.register_script(SW_OPS)
    twin, now = SlidingWindowLog(), T0
    for key, step, name, limit, window_ms in ops:
        now += step
        expected = twin_call(twin, name, key, limit, window_ms, now)
        assert script(keys=[key], args=[name, limit, window_ms, now]) == expected
