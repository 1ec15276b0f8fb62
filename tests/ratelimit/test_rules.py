"""Limit values, key suffixes and the limits-table validation messages."""

from __future__ import annotations

import pytest

from ratelimit import Limit, LimitsError, limit_key, validate_limits

IP = Limit(by="ip", limit=20, window_s=60)


def test_limit_key_is_stable_and_names_every_part():
    assert limit_key("claim", IP, "10.0.0.1") == "rl:claim:ip:60:10.0.0.1"
    assert limit_key("redeem", IP, "2001:db8::1") == "rl:redeem:ip:60:2001:db8::1"


def test_limit_key_keeps_identities_apart():
    keys = {
        limit_key("claim", IP, "a:b"),
        limit_key("claim", IP, "a"),
        limit_key("claim", Limit(by="user", limit=20, window_s=60), "a:b"),
        limit_key("claim", Limit(by="ip", limit=20, window_s=6), "0:a:b"),
    }
    assert len(keys) == 4


def test_limits_differing_only_in_amount_share_a_log():
    assert limit_key("claim", IP, "x") == limit_key("claim", Limit("ip", 5, 60), "x")


@pytest.mark.parametrize("identity", ["", "x" * 129, "a\nb", "tab\there", "del\x7f", "c1\x85"])
def test_limit_key_rejects_bad_identities(identity):
    with pytest.raises(ValueError, match="1-128 characters"):
        limit_key("claim", IP, identity)


def test_limit_key_accepts_any_visible_unicode_up_to_128_chars():
    assert limit_key("claim", IP, "用户" * 64).endswith("用户" * 64)


def test_window_ms():
    assert IP.window_ms == 60_000


def test_valid_table_decodes_into_limits():
    raw = {"claim": [{"by": "ip", "limit": 20, "window_s": 60}], "redeem": []}
    assert validate_limits(raw) == {"claim": [IP], "redeem": []}


def test_already_decoded_limits_pass_through():
    assert validate_limits({"claim": [IP]}) == {"claim": [IP]}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "limits must be a table of routes"),
        ({"login": []}, "limits.login: unknown route 'login' (known: claim, redeem)"),
        ({"claim": {}}, "limits.claim must be a list of limits"),
        (
            {
                "claim": [
                    {"by": "ip", "limit": 1, "window_s": 1},
                    {"by": "ip", "limit": 1, "window_s": 0},
                ]
            },
            "limits.claim[1].window_s must be >= 1",
        ),
        (
            {"claim": [{"by": "ip", "limit": 0, "window_s": 1}]},
            "limits.claim[0].limit must be >= 1",
        ),
        (
            {"claim": [{"by": "ip", "limit": 1_000_000_001, "window_s": 1}]},
            "limits.claim[0].limit must be <= 1000000000",
        ),
        (
            {"claim": [{"by": "ip", "limit": 1, "window_s": 30 * 86_400 + 1}]},
            "limits.claim[0].window_s must be <= 2592000",
        ),
        (
            {"claim": [{"by": "asn", "limit": 1, "window_s": 1}]},
            "limits.claim[0].by must be one of ip, device, user, client",
        ),
        ({"claim": [{"by": "ip", "limit": 1}]}, "limits.claim[0].window_s is required"),
        (
            {"claim": [{"by": "ip", "limit": 1, "window_s": 1, "burst": 2}]},
            "limits.claim[0].burst is not a known key",
        ),
        (
            {"claim": [{"by": "ip", "limit": "5", "window_s": 1}]},
            "limits.claim[0].limit: Expected `int`, got `str`",
        ),
        ({"claim": ["ip"]}, "limits.claim[0]: Expected `object`, got `str`"),
        (
            {
                "claim": [
                    {"by": "ip", "limit": 1, "window_s": 9},
                    {"by": "ip", "limit": 2, "window_s": 9},
                ]
            },
            "limits.claim[1] repeats by/window_s of limits.claim[0]; keep one of them",
        ),
    ],
)
def test_bad_tables_name_the_key(raw, message):
    with pytest.raises(LimitsError) as caught:
        validate_limits(raw)
    assert str(caught.value) == message


def test_routes_can_be_extended():
    assert validate_limits({"read": [IP]}, routes=("read",)) == {"read": [IP]}
