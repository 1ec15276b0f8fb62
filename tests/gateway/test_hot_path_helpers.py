"""Small hot-path helpers that replace slower library calls give the same answers."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from gateway import codes
from gateway.randomness import RandomPool
from gateway.timefmt import rfc3339_ms
from gateway.valkey.keys import CROCKFORD


@given(st.integers(min_value=0, max_value=253_402_300_799_999))
def test_rfc3339_ms_matches_datetime_formatting(ms: int) -> None:
    expected = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
    assert rfc3339_ms(ms) == f"{expected}{ms % 1000:03d}Z"


def test_rfc3339_ms_alternating_seconds_stay_right() -> None:
    now, later = 1_795_000_000_123, 1_795_086_400_999
    for _ in range(3):
        assert rfc3339_ms(now) == "2026-11-18T11:06:40.123Z"
        assert rfc3339_ms(later) == "2026-11-19T11:06:40.999Z"


@given(st.binary(min_size=10, max_size=10))
def test_code_body_is_the_crockford_spelling_of_the_random_bytes(data: bytes) -> None:
    n, chars = int.from_bytes(data, "big"), []
    for _ in range(16):
        chars.append(CROCKFORD[n & 31])
        n >>= 5
    assert codes._encode(data) == "".join(reversed(chars))


def test_random_pool_hands_out_each_byte_once_across_blocks() -> None:
    pool = RandomPool(block=64)
    taken = [pool.take(10) for _ in range(200)]  # crosses many 64-byte blocks
    assert all(len(t) == 10 for t in taken)
    assert len(set(taken)) == len(taken)


def test_random_pool_child_after_fork_does_not_repeat_parent_bytes() -> None:
    pool = RandomPool()
    pool.take(8)  # the parent holds a partly used block
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report what it would hand out next
        os.write(write, pool.take(16))
        os._exit(0)
    os.waitpid(pid, 0)
    child_next = os.read(read, 16)
    assert child_next != pool.take(16)
