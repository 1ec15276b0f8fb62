"""Request signing (SPEC §6): canonical string, verify outcomes, nonce keys."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from risk import MAX_SKEW_S, NONCE_TTL_S, canonical_string, nonce_key_suffix, sign, verify

SECRET = "s3cret-ключ"
NOW = 1_700_000_000.0
TS = "1700000000"
PATH = "/v1/campaigns/c1/claims?src=app&x=%2F"
BODY = b'{"user_id": "u1", "device_id": "d1"}'


def check(
    *, secret=SECRET, method="POST", path=PATH, ts=TS, nonce="n-1", sig=None, body=BODY, now=NOW
):
    if sig is None:
        sig = sign(SECRET, "POST", PATH, TS, "n-1", BODY)
    return verify(secret, method, path, ts, nonce, sig, body, now=now)


def test_canonical_string_is_the_spec_layout():
    digest = hashlib.sha256(BODY).hexdigest()
    assert canonical_string("post", PATH, TS, "n-1", BODY) == (
        f"POST\n{PATH}\n{TS}\nn-1\n{digest}".encode()
    )


def test_sign_is_hex_hmac_sha256_keyed_with_the_utf8_secret():
    expected = hmac.new(
        SECRET.encode(), canonical_string("POST", PATH, TS, "n-1", BODY), hashlib.sha256
    ).hexdigest()
    assert sign(SECRET, "POST", PATH, TS, "n-1", BODY) == expected


def test_valid_signature_is_accepted():
    result = check()
    assert (result.ok, result.reason) == (True, None)


def test_uppercase_hex_and_edge_of_skew_are_accepted():
    assert check(sig=sign(SECRET, "POST", PATH, TS, "n-1", BODY).upper()).ok
    assert check(now=NOW + MAX_SKEW_S).ok
    assert check(now=NOW - MAX_SKEW_S).ok


def test_empty_body_and_no_query_sign_too():
    sig = sign(SECRET, "GET", "/v1/redemptions/r1", TS, "n", b"")
    assert verify(SECRET, "GET", "/v1/redemptions/r1", TS, "n", sig, b"", now=NOW).ok


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"body": BODY + b" "}, "bad_signature"),  # tampered body
        ({"secret": "other"}, "bad_signature"),
        ({"path": "/v1/campaigns/c1/claims"}, "bad_signature"),  # query dropped
        ({"path": "/v1/campaigns/c1/claims?src=app&x=/"}, "bad_signature"),  # query re-encoded
        ({"method": "PUT"}, "bad_signature"),
        ({"nonce": "n-2"}, "bad_signature"),
        ({"sig": "zz" * 32}, "bad_signature"),
        ({"sig": "ab"}, "bad_signature"),
        ({"sig": "é" * 64}, "bad_signature"),  # non-ASCII never reaches compare_digest
        ({"nonce": "has space"}, "bad_signature"),
        ({"nonce": "x" * 129}, "bad_signature"),
        ({"now": NOW + MAX_SKEW_S + 1}, "stale"),  # too old
        ({"now": NOW - MAX_SKEW_S - 1}, "stale"),  # from the future
        ({"ts": "17e8"}, "bad_timestamp"),
        ({"ts": "-1700000000"}, "bad_timestamp"),
        ({"ts": "1700000000.5"}, "bad_timestamp"),
        ({"ts": "\u0661\u0667" + "\u0660" * 8}, "bad_timestamp"),  # Arabic-Indic digits
        ({"ts": "1700000000\n"}, "bad_timestamp"),
        ({"ts": None}, "missing"),
        ({"nonce": None}, "missing"),
        ({"sig": ""}, "missing"),
    ],
)
def test_rejections(change, reason):
    result = check(**change)
    assert (result.ok, result.reason) == (False, reason)


def test_nonce_keys_are_unique_per_client_and_nonce():
    assert nonce_key_suffix("c1", "n-1") == "nonce:2:c1:n-1"
    assert nonce_key_suffix("a:b", "c") != nonce_key_suffix("a", "b:c")


def test_nonces_outlive_the_accepted_timestamp_range():
    assert NONCE_TTL_S >= 2 * MAX_SKEW_S
