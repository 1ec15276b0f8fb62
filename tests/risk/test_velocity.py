"""velocity.lua on the real Valkey, and its agreement with the memory.py twin."""

from __future__ import annotations

import re
from typing import Any

import redis
import redis.asyncio as aredis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from risk import DistinctWindow, RiskRule, fires, velocity_source
from tests.risk.conftest import DISTINCT_OPS

T0 = 1_700_000_000_000


async def test_counts_distinct_members_within_the_window(distinct):
    assert await distinct("hit", "dev", "u1", 60_000, T0) == [0, 1]
    assert await distinct("hit", "dev", "u1", 60_000, T0 + 1) == [1, 0]
    assert await distinct("hit", "dev", "u2", 60_000, T0 + 2) == [1, 1]
    assert await distinct("peek", "dev", "u3", 60_000, T0 + 3) == [2, 1]
    # u1 was last seen at T0 + 1: gone at T0 + 60_001, u2 still in.
    assert await distinct("peek", "dev", "u1", 60_000, T0 + 60_001) == [1, 1]


async def test_threshold_is_the_most_allowed(distinct):
    rule = RiskRule("d", "distinct_users_per_device", threshold=2, window_s=60)
    seen = [await distinct("hit", "dev", u, 60_000, T0) for u in ("u1", "u2", "u2", "u3")]
    assert [fires(rule, count, is_new=bool(new)) for count, new in seen] == [
        False,
        False,
        False,  # u2 again adds nothing
        True,  # a third distinct user exceeds 2
    ]


async def test_record_keeps_the_later_time_and_sets_expiry(distinct, redis_client: aredis.Redis):
    await distinct("record", "dev", "u1", 10_000, T0 + 500)
    await distinct("record", "dev", "u1", 10_000, T0)  # clock stepped back
    assert await redis_client.zscore("dev", "u1") == T0 + 500
    assert 10_000 < await redis_client.pttl("dev") <= 10_500


async def test_emptied_sets_disappear(distinct, redis_client: aredis.Redis):
    await distinct("record", "dev", "u1", 1000, T0)
    assert await distinct("peek", "dev", "u1", 1000, T0 + 1000) == [0, 1]
    assert await redis_client.exists("dev") == 0


async def test_library_chunk_keeps_its_contract(redis_client: aredis.Redis):
    source = velocity_source()
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("--"))
    assert not re.search(r"\b(KEYS|ARGV|TIME)\b", code)
    assert not re.search(r"^return\b", code, re.MULTILINE)
    assert source.startswith("--")
    assert await redis_client.eval(source + "\nreturn 7", 0) == 7


def twin_call(twin: DistinctWindow, op: str, key: str, member: str, *args: int) -> list[int]:
    window_ms, now_ms = args
    if op == "record":
        twin.record(key, member, window_ms, now_ms)
        return []
    count, is_new = twin.peek(key, member, window_ms, now_ms)
    if op == "hit":
        twin.record(key, member, window_ms, now_ms)
    return [count, is_new]


# Windows stay >= 10 s so Redis's real-time key expiry never fires while an example runs.
op = st.tuples(
    st.sampled_from(["dev1", "dev2"]),
    st.sampled_from(["u1", "u2", "u3", "u4"]),
    st.one_of(
        st.sampled_from([0, 1, 9_999, 10_000, 10_001, 20_000]),
        st.integers(-300, 0),
        st.integers(0, 25_000),
    ),
    st.sampled_from(["peek", "record", "hit"]),
    st.sampled_from([10_000, 20_000]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=60))
@example(  # a clock step back must not lose the later last-seen time
    ops=[
        ("dev1", "u1", 0, "record", 10_000),
        ("dev1", "u1", -300, "record", 10_000),
        ("dev1", "u2", 10_100, "peek", 10_000),
    ]
)
def test_lua_and_twin_agree(sync_redis: redis.Redis, ops: list[Any]) -> None:
    sync_redis.flushdb()
    script = sync_redis.register_script(DISTINCT_OPS)
    twin, now = DistinctWindow(), T0
    for key, member, step, name, window_ms in ops:
        now += step
        expected = twin_call(twin, name, key, member, window_ms, now)
        assert script(keys=[key], args=[name, member, window_ms, now]) == expected
