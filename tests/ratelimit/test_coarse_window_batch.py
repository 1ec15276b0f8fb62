"""The coarse window's batch form (cw_log, cw_admit and cw_unadmit with a log, cw_flush), as
the claim function uses it: the same answers, the same list and the same expiry as hit by hit,
across calls that start from what earlier calls left, groups that fill, leave and are taken
back, and clocks that step back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ratelimit.scripts import coarse_window_source

BATCH_OPS = coarse_window_source() + "\n" + (Path(__file__).parent / "cw_batch_ops.lua").read_text()
T0 = 1_800_000_000_000
WINDOW = 10_000

steps = st.one_of(
    st.sampled_from([0, 0, 0, 1, WINDOW - 1, WINDOW, WINDOW + 1, WINDOW // 8, WINDOW // 2]),
    st.integers(-500, 3 * WINDOW),
)
calls = st.lists(  # each inner list is one call's hits
    st.lists(
        st.tuples(steps, st.sampled_from(["admit", "admit", "admit_unadmit"])),
        min_size=1,
        max_size=20,
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=calls, limit=st.integers(2, 20), group=st.integers(1, 4))
def test_a_batch_answers_stores_and_expires_as_hit_by_hit(
    sync_redis: redis.Redis, calls: list[list[Any]], limit: int, group: int
) -> None:
    sync_redis.flushdb()
    script = sync_redis.register_script(BATCH_OPS)
    group = min(group, limit - 1)
    now = T0
    for hits in calls:
        args: list[Any] = [limit, WINDOW, group]
        for step, op in hits:
            now = max(T0, now + step)
            args += [now, op]
        out = script(keys=["alone", "batch"], args=args)
        for i in range(0, len(out), 4):
            assert out[i : i + 2] == out[i + 2 : i + 4], (i // 4, out)
        assert sync_redis.lrange("alone", 0, -1) == sync_redis.lrange("batch", 0, -1)
        assert sync_redis.pexpiretime("alone") == sync_redis.pexpiretime("batch")
