"""LocalBlocks: answers blocked keys locally, bounded, never past the given until."""

from __future__ import annotations

import pytest

from ratelimit import LocalBlocks


def test_blocked_until_the_given_time_then_forgotten():
    blocks = LocalBlocks()
    blocks.block("ip:1", until=100.0)
    assert blocks.blocked_for("ip:1", now=40.0) == 60.0
    assert blocks.blocked_for("ip:1", now=99.5) == 0.5
    assert blocks.blocked_for("ip:1", now=100.0) == 0.0
    assert len(blocks) == 0  # read out once expired


def test_unknown_key_is_not_blocked():
    assert LocalBlocks().blocked_for("nobody", now=0.0) == 0.0


def test_a_new_block_replaces_the_old_one_both_ways():
    blocks = LocalBlocks()
    blocks.block("k", until=50.0)
    blocks.block("k", until=80.0)
    assert blocks.blocked_for("k", now=60.0) == 20.0
    blocks.block("k", until=65.0)  # Redis now says sooner: believe it
    assert blocks.blocked_for("k", now=60.0) == 5.0


def test_full_cache_evicts_the_soonest_expiring():
    blocks = LocalBlocks(max_keys=3)
    for key, until in [("a", 30.0), ("b", 10.0), ("c", 20.0)]:
        blocks.block(key, until)
    blocks.block("d", until=40.0)
    assert len(blocks) == 3
    assert blocks.blocked_for("b", now=0.0) == 0.0
    assert [blocks.blocked_for(k, now=0.0) for k in "acd"] == [30.0, 20.0, 40.0]


def test_eviction_skips_stale_heap_entries():
    blocks = LocalBlocks(max_keys=2)
    blocks.block("a", until=10.0)
    blocks.block("b", until=20.0)
    blocks.block("a", until=30.0)  # a's old (10.0) entry is stale now
    blocks.block("c", until=40.0)
    assert blocks.blocked_for("b", now=0.0) == 0.0
    assert blocks.blocked_for("a", now=0.0) == 30.0


def test_size_stays_bounded_under_churn():
    blocks = LocalBlocks(max_keys=100)
    for i in range(10_000):
        blocks.block(f"k{i % 150}", until=float(i))
    assert len(blocks) == 100
    assert len(blocks._heap) <= 200


def test_max_keys_must_be_positive():
    with pytest.raises(ValueError, match="max_keys"):
        LocalBlocks(max_keys=0)
