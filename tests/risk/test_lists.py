"""Block/allow lists: validation, IP/CIDR matching, Redis persistence, refresh on version."""

from __future__ import annotations

import pytest
import redis.asyncio as aredis

from risk import (
    LIST_NAMES,
    VERSION_KEY,
    IpSet,
    ListError,
    RiskListCache,
    RiskLists,
    apply_update,
    list_key,
    validate_entries,
)


def test_list_keys_share_one_hash_tag():
    assert [list_key(n) for n in LIST_NAMES] == [
        "gw:{risk}:list:blocked_users",
        "gw:{risk}:list:blocked_devices",
        "gw:{risk}:list:blocked_ips",
        "gw:{risk}:list:allowed_users",
    ]
    assert VERSION_KEY == "gw:{risk}:lists:version"


def test_blocked_by_names_the_matching_list():
    lists = RiskLists(blocked_users=["u1"], blocked_devices=["d1"], blocked_ips=["10.0.0.0/8"])
    assert lists.blocked_by("u1", "d9", "1.1.1.1") == "blocked_users"
    assert lists.blocked_by("u9", "d1", "1.1.1.1") == "blocked_devices"
    assert lists.blocked_by("u9", "d9", "10.200.3.4") == "blocked_ips"
    assert lists.blocked_by("u9", "d9", "11.0.0.1") is None
    assert lists.blocked_by(None, None, None) is None


def test_allow_list():
    lists = RiskLists(allowed_users=["vip"])
    assert lists.is_allowed("vip")
    assert not lists.is_allowed("other")
    assert not lists.is_allowed(None)


@pytest.mark.parametrize(
    ("ip", "blocked"),
    [
        ("192.0.2.7", True),  # single v4 address
        ("192.0.2.8", False),
        ("198.51.100.255", True),  # inside a v4 /24
        ("198.51.101.0", False),
        ("::ffff:198.51.100.1", True),  # v4-mapped v6 peer matches the v4 network
        ("2001:db8::1", True),  # single v6 address
        ("2001:db8::2", False),
        ("2001:db8:abcd:12ff::9", True),  # inside a v6 /56
        ("2001:db8:abcd:1300::", False),
        ("not-an-ip", False),
    ],
)
def test_ip_matching_v4_v6_and_cidrs(ip, blocked):
    ips = IpSet(["192.0.2.7", "198.51.100.0/24", "2001:db8::1", "2001:db8:abcd:1200::/56"])
    assert (ip in ips) is blocked


def test_thousands_of_cidrs_match_by_prefix_length():
    ips = IpSet([f"10.{a}.{b}.0/24" for a in range(20) for b in range(200)])
    assert len(ips) == 4000
    assert "10.19.199.200" in ips
    assert "10.20.0.1" not in ips


def test_invalid_stored_entries_are_skipped_not_fatal(caplog):
    ips = IpSet(["bogus", "10.0.0.1"])
    assert "10.0.0.1" in ips and len(ips) == 1
    assert "bogus" in caplog.text


def test_validate_entries_canonicalises_ips():
    assert validate_entries("blocked_ips", ["2001:DB8::0001", "10.0.0.0/8", "::/0"]) == [
        "2001:db8::1",
        "10.0.0.0/8",
        "::/0",
    ]
    assert validate_entries("blocked_users", ["用户", "u" * 128]) == ["用户", "u" * 128]


@pytest.mark.parametrize(
    ("name", "entries", "message"),
    [
        ("vip", [], "unknown list 'vip'"),
        ("blocked_users", "u1", "entries must be a list of strings"),
        ("blocked_users", [1], "entries must be a list of strings"),
        ("blocked_users", [""], r"blocked_users\[0\]: ids are 1-128 characters"),
        ("blocked_devices", ["ok", "x" * 129], r"blocked_devices\[1\]: ids are 1-128"),
        ("allowed_users", ["a\tb"], "without control characters"),
        ("blocked_ips", ["300.1.1.1"], r"blocked_ips\[0\]: '300.1.1.1' is not an IP"),
        ("blocked_ips", ["10.0.0.1/8"], "has host bits set"),
        ("blocked_ips", ["10.0.0.0/33"], "is not an IP address or CIDR"),
    ],
)
def test_validate_entries_rejects_bad_input(name, entries, message):
    with pytest.raises(ListError, match=message):
        validate_entries(name, entries)


async def test_apply_update_edits_the_set_and_bumps_the_version(redis_client: aredis.Redis):
    assert await apply_update(redis_client, "blocked_ips", ["10.0.0.0/8", "2001:DB8::1"], []) == 1
    assert await apply_update(redis_client, "blocked_ips", [], ["10.0.0.0/8"]) == 2
    assert await redis_client.smembers(list_key("blocked_ips")) == {b"2001:db8::1"}
    assert await redis_client.get(VERSION_KEY) == b"2"


async def test_bad_update_changes_nothing(redis_client: aredis.Redis):
    with pytest.raises(ListError):
        await apply_update(redis_client, "blocked_ips", ["10.0.0.1", "nope"], [])
    with pytest.raises(ListError, match="entries must be a list of strings"):
        await apply_update(redis_client, "blocked_users", "u1", [])  # a str is not a list of ids
    with pytest.raises(ListError, match="both added and removed: u1"):
        await apply_update(redis_client, "blocked_users", ["u1"], ["u1"])
    assert await redis_client.dbsize() == 0


async def test_cache_reloads_only_when_the_version_changes(redis_client: aredis.Redis):
    cache = RiskListCache()
    held = cache.lists  # the gateway may keep this reference
    assert await cache.refresh_if_changed(redis_client)  # first load, even of nothing
    assert (cache.version, await cache.refresh_if_changed(redis_client)) == (0, False)

    await apply_update(redis_client, "blocked_users", ["u1"], [])
    await apply_update(redis_client, "allowed_users", ["vip"], [])
    assert await cache.refresh_if_changed(redis_client)
    assert (cache.version, held.blocked_by("u1", None, None), held.is_allowed("vip")) == (
        2,
        "blocked_users",
        True,
    )

    # A write that skips the version is not picked up: the version is the only signal.
    await redis_client.sadd(list_key("blocked_users"), "u2")
    assert not await cache.refresh_if_changed(redis_client)
    assert held.blocked_by("u2", None, None) is None

    await apply_update(redis_client, "blocked_users", [], ["u1"])
    assert await cache.refresh_if_changed(redis_client)
    assert (held.blocked_by("u1", None, None), held.blocked_by("u2", None, None)) == (
        None,
        "blocked_users",
    )


async def test_cache_reloads_after_a_reset_version(redis_client: aredis.Redis):
    cache = RiskListCache()
    await apply_update(redis_client, "blocked_devices", ["d1"], [])
    await cache.refresh_if_changed(redis_client)
    await redis_client.flushall()  # e.g. a fresh Redis: version 1 -> missing
    assert await cache.refresh_if_changed(redis_client)
    assert cache.lists.blocked_by(None, "d1", None) is None


async def test_cache_reads_decoded_clients_too(valkey_url, redis_client):
    await apply_update(redis_client, "blocked_users", ["用户"], [])
    decoded = aredis.Redis.from_url(valkey_url, decode_responses=True)
    try:
        cache = RiskListCache()
        await cache.refresh_if_changed(decoded)
    finally:
        await decoded.aclose()
    assert cache.lists.blocked_by("用户", None, None) == "blocked_users"
