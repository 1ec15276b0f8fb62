"""sliding_window.lua on the real Valkey: admission, retry-after, boundary bursts, clock steps."""

from __future__ import annotations

import re

import redis.asyncio as aredis

from ratelimit import load_lua, sliding_window_source

T0 = 1_700_000_000_000  # an injected clock, in ms


async def test_n_admitted_then_rejected_with_exact_retry_after(sw):
    for step in range(3):
        assert await sw("hit", "k", 3, 10_000, T0 + 1000 * step) == [step, 0]
    # The oldest hit (T0) leaves the window at T0 + 10_000.
    assert await sw("hit", "k", 3, 10_000, T0 + 2500) == [3, 7500]
    assert await sw("hit", "k", 3, 10_000, T0 + 9999) == [3, 1]
    assert await sw("hit", "k", 3, 10_000, T0 + 10_000) == [2, 0]


async def test_rejected_requests_are_not_recorded(sw, redis_client: aredis.Redis):
    await sw("hit", "k", 1, 10_000, T0)
    for _ in range(5):
        assert await sw("hit", "k", 1, 10_000, T0 + 1) == [1, 9999]
    assert await redis_client.llen("k") == 1


async def test_burst_straddling_a_boundary_never_exceeds_the_limit(sw):
    limit, window = 5, 1000
    times = [T0 + 990 + i for i in range(10)]  # a burst across T0 + 1000
    times += [T0 + t for t in range(1000, 4000, 37)]  # then steady traffic
    admitted = [t for t in times if (await sw("hit", "k", limit, window, t))[0] < limit]
    # No interval (t - window, t] holds more than `limit` admitted hits...
    for t in admitted:
        assert sum(t - window < s <= t for s in admitted) <= limit
    # ...and the first 5 of the burst are the ones that got in; the next slot opens at 1990.
    assert admitted[:5] == times[:5]
    assert min(t for t in admitted[5:]) >= T0 + 1990


async def test_over_limit_after_a_limit_decrease_waits_for_enough_hits(sw):
    for step in range(4):
        await sw("hit", "k", 10, 10_000, T0 + step * 100)
    # Limit cut to 2 with 4 hits logged: 3 must leave, the third left at T0 + 200 + 10_000.
    assert await sw("peek", "k", 2, 10_000, T0 + 1000) == [4, 9200]


async def test_record_keeps_order_when_the_clock_steps_back(sw, redis_client: aredis.Redis):
    await sw("record", "k", 0, 10_000, T0 + 500)
    await sw("record", "k", 0, 10_000, T0)
    assert await redis_client.lrange("k", 0, -1) == [b"%d" % (T0 + 500)] * 2
    # The key outlives its newest hit's window (10_500 ms from T0), by at most two steps.
    assert 10_500 < await redis_client.pttl("k") <= 10_500 + 2 * 1250


async def test_record_sets_expiry_to_the_window_plus_one_to_two_steps(
    sw, redis_client: aredis.Redis
):
    await sw("record", "k", 0, 60_000, T0)
    assert 60_000 + 7_500 - 1_000 < await redis_client.pttl("k") <= 60_000 + 2 * 7_500


async def test_a_busy_key_moves_its_expiry_once_per_step(sw, redis_client: aredis.Redis):
    step = 10_000 // 8
    opening = T0 // step * step
    await sw("hit", "k", 100, 10_000, opening + 10)
    await redis_client.pexpire("k", 999_000)  # a marker: only a new PEXPIRE replaces it
    await sw("hit", "k", 100, 10_000, opening + step - 1)
    assert await redis_client.pttl("k") > 900_000
    await sw("hit", "k", 100, 10_000, opening + step)  # the next step opens
    assert 10_000 + step - 1_000 < await redis_client.pttl("k") <= 10_000 + 2 * step


async def test_admit_refuses_a_full_log_and_leaves_it_as_it_was(sw, redis_client: aredis.Redis):
    assert await sw("admit", "k", 2, 10_000, T0) == [0, 0]
    assert await sw("admit", "k", 2, 10_000, T0 + 100) == [1, 0]
    ttl = await redis_client.pttl("k")
    assert await sw("admit", "k", 2, 10_000, T0 + 200) == [2, 9800]
    assert await redis_client.lrange("k", 0, -1) == [b"%d" % T0, b"%d" % (T0 + 100)]
    assert ttl - 50 <= await redis_client.pttl("k") <= ttl
    # Once the oldest hit has left, the full log trims and admits again.
    assert await sw("admit", "k", 2, 10_000, T0 + 10_000) == [1, 0]
    assert await redis_client.lrange("k", 0, -1) == [b"%d" % (T0 + 100), b"%d" % (T0 + 10_000)]


async def test_unadmit_takes_back_the_hit_just_admitted(sw, redis_client: aredis.Redis):
    await sw("admit", "k", 5, 10_000, T0)
    await sw("admit", "k", 5, 10_000, T0 + 1)
    await sw("unadmit", "k", 5, 10_000, T0 + 1)
    assert await redis_client.lrange("k", 0, -1) == [b"%d" % T0]
    await sw("unadmit", "k", 5, 10_000, T0 + 1)
    assert await redis_client.exists("k") == 0  # an emptied log disappears


async def test_admit_keeps_order_when_the_clock_steps_back(sw, redis_client: aredis.Redis):
    await sw("admit", "k", 5, 10_000, T0 + 500)
    assert await sw("admit", "k", 5, 10_000, T0) == [1, 0]
    assert await redis_client.lrange("k", 0, -1) == [b"%d" % (T0 + 500)] * 2


async def test_peek_trims_and_empty_logs_disappear(sw, redis_client: aredis.Redis):
    await sw("record", "k", 0, 1000, T0)
    assert await sw("peek", "k", 1, 1000, T0 + 1000) == [0, 0]
    assert await redis_client.exists("k") == 0


async def test_a_log_below_its_limit_is_trimmed_only_once_full(sw, redis_client: aredis.Redis):
    for step in range(3):
        await sw("hit", "k", 3, 1000, T0 + step)
    # All three have left the window; below a limit of 4 the peek answers from LLEN alone.
    assert await sw("peek", "k", 4, 1000, T0 + 5000) == [3, 0]
    assert await redis_client.llen("k") == 3
    # A full log (limit 3) is trimmed: the stale hits go at once, and the emptied key with them.
    assert await sw("peek", "k", 3, 1000, T0 + 5000) == [0, 0]
    assert await redis_client.exists("k") == 0


async def test_a_full_log_keeps_exactly_the_hits_inside_the_window(sw, redis_client):
    for step in range(10):
        await sw("hit", "k", 10, 1000, T0 + step)
    # Horizon T0 + 5: the hits at T0 .. T0 + 5 leave in one LTRIM, T0 + 6 .. T0 + 9 stay.
    assert await sw("peek", "k", 10, 1000, T0 + 1005) == [4, 0]
    assert await redis_client.lrange("k", 0, -1) == [b"%d" % (T0 + i) for i in range(6, 10)]


async def test_trim_at_zero_always_counts_exactly(sw, redis_client: aredis.Redis):
    for t in (T0, T0 + 1, T0 + 600):
        await sw("hit", "k", 5, 1000, t)
    assert await sw("peek", "k", 5, 1000, T0 + 1001, 0) == [1, 0]
    assert await redis_client.llen("k") == 1
    # trim_at = 2 trims a log of 2 or more, so a count of 2 or more is exact.
    await sw("hit", "k", 5, 1000, T0 + 1500)
    assert await sw("peek", "k", 5, 1000, T0 + 1600, 2) == [1, 0]


async def test_library_chunk_keeps_its_contract(redis_client: aredis.Redis):
    source = sliding_window_source()
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("--"))
    assert not re.search(r"\b(KEYS|ARGV|TIME)\b", code)
    assert not re.search(r"^return\b", code, re.MULTILINE)  # nothing at top level returns
    assert source.startswith("--")  # opens with its contract
    # It compiles as a prefix and leaves the body free to return.
    assert await redis_client.eval(source + "\nreturn 7", 0) == 7


def test_load_lua_reads_files_next_to_the_code():
    assert "sw_peek" in load_lua("ratelimit", "sliding_window.lua")
