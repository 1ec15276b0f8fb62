"""The coarse window (limits above EXACT_MAX_HITS): Lua and twin agree, and its bounds hold.

Bounds, against an exact count of the admitted hits: no window of the configured length ever
holds more than `limit` of them, and a hit is refused only when at least `limit - group` lie
in its window (group = limit // 64), whatever the timing, bursts at group edges included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ratelimit.memory import CoarseWindowLog
from ratelimit.rules import COARSE_GROUPS, EXACT_MAX_HITS, Limit
from ratelimit.scripts import coarse_window_source

CW_OPS = coarse_window_source() + "\n" + (Path(__file__).parent / "cw_ops.lua").read_text()
T0 = 1_800_000_000_000
WINDOW = 10_000  # >= 10 s: no real-time expiry while an example runs

# Steps that land on the edges an attacker would time: the window, a group's span, 0 and 1.
edge_steps = st.one_of(
    st.sampled_from([0, 0, 0, 1, WINDOW - 1, WINDOW, WINDOW + 1, WINDOW // 64, WINDOW // 2]),
    st.integers(0, 3 * WINDOW),
)


def state_in_valkey(client: redis.Redis, key: str) -> tuple[list[int], int]:
    raw = [item.decode() for item in client.lrange(key, 0, -1)]
    if not raw:
        return [], 0
    return [int(start) for start in raw[:-1]], int(raw[-1].split(":")[0])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.one_of(edge_steps, st.integers(-500, 0)),  # clocks that step back too
            st.sampled_from(["admit", "admit", "admit", "admit_unadmit"]),
        ),
        min_size=1,
        max_size=120,
    ),
    limits=st.fixed_dictionaries({"a": st.integers(2, 20), "b": st.integers(2, 20)}),
    groups=st.fixed_dictionaries({"a": st.integers(1, 4), "b": st.integers(1, 4)}),
)
@example(  # a full oldest group leaves exactly when the next group's start leaves the window
    ops=[("a", 0, "admit")] * 4 + [("a", 1, "admit")] * 2 + [("a", WINDOW, "admit")],
    limits={"a": 4, "b": 2},
    groups={"a": 2, "b": 1},
)
def test_lua_and_twin_agree(
    sync_redis: redis.Redis, ops: list[Any], limits: dict[str, int], groups: dict[str, int]
) -> None:
    sync_redis.flushdb()
    script = sync_redis.register_script(CW_OPS)
    twin, now = CoarseWindowLog(), T0
    for key, step, op in ops:
        now += step
        limit, group = limits[key], min(groups[key], limits[key] - 1)
        expected = list(twin.admit(key, limit, WINDOW, now, group))
        if op == "admit_unadmit" and expected[1] == 0:
            twin.unadmit(key, group)
        got = script(keys=[key], args=[op, limit, WINDOW, now, group])
        assert got == expected
        assert state_in_valkey(sync_redis, key) == twin.state(key)


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(EXACT_MAX_HITS + 1, 2_000),
    bursts=st.lists(st.tuples(edge_steps, st.integers(1, 400)), min_size=1, max_size=40),
)
def test_never_over_the_limit_and_never_refused_below_limit_minus_a_group(
    limit: int, bursts: list[tuple[int, int]]
) -> None:
    group = Limit(by="client", limit=limit, window_s=10).group
    assert group == limit // COARSE_GROUPS
    twin, now = CoarseWindowLog(), T0
    admitted: list[int] = []
    for step, size in bursts:
        now += step
        for _ in range(size):
            inside = sum(1 for t in admitted if t > now - WINDOW)
            _count, retry_after_ms = twin.admit("k", limit, WINDOW, now, group)
            if retry_after_ms:
                assert inside >= limit - group, (inside, limit, group)
            else:
                assert inside + 1 <= limit  # this window, ending now, stays within the limit
                admitted.append(now)
    # Every window of the configured length, wherever it starts, holds at most `limit`.
    for end in admitted:
        assert sum(1 for t in admitted if end - WINDOW < t <= end) <= limit


def test_a_million_per_hour_keeps_under_a_kilobyte(sync_redis: redis.Redis) -> None:
    sync_redis.flushdb()
    limit = Limit(by="client", limit=1_000_000, window_s=3600)
    burst = (
        coarse_window_source()
        + """
for i = 0, ARGV[1] - 1 do
  cw_admit(KEYS[1], ARGV[2], ARGV[3], ARGV[4] + i * ARGV[5], ARGV[6])
end
return 0
"""
    )
    script = sync_redis.register_script(burst)
    # 100,000 hits spread over the hour, then the fullest a key can be: 64 full groups.
    script(keys=["big"], args=[100_000, limit.limit, limit.window_ms, T0, 36, limit.group])
    assert sync_redis.memory_usage("big") < 1024
    small = Limit(by="client", limit=EXACT_MAX_HITS * 50, window_s=3600)
    script(keys=["full"], args=[small.limit, small.limit, small.window_ms, T0, 1, small.group])
    assert sync_redis.llen("full") == COARSE_GROUPS + 1
    assert sync_redis.memory_usage("full") < 1024
