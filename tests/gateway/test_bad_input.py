"""Bad input: each answered with the envelope, nothing changes, the worker stays healthy."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway.conftest import API_KEY, Gateway

GOOD = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

CASES: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("malformed json", b'{"user_id": "u", ', {}, 400, "invalid_request"),
    ("json array", b'["u", "d"]', {}, 400, "invalid_request"),
    ("wrong types", b'{"user_id": 5, "device_id": true}', {}, 400, "invalid_request"),
    ("missing field", b'{"user_id": "u"}', {}, 400, "invalid_request"),
    ("unknown field", b'{"user_id": "u", "device_id": "d", "x": 1}', {}, 400, "invalid_request"),
    ("empty id", b'{"user_id": "", "device_id": "d"}', {}, 400, "invalid_request"),
    (
        "10 kB id",
        b'{"user_id": "' + b"u" * 3000 + b'", "device_id": "d"}',
        {},
        400,
        "invalid_request",
    ),
    (
        "129-char id",
        b'{"user_id": "' + b"u" * 129 + b'", "device_id": "d"}',
        {},
        400,
        "invalid_request",
    ),
    ("control char", b'{"user_id": "a\\u0007b", "device_id": "d"}', {}, 400, "invalid_request"),
    ("tab in id", b'{"user_id": "a\\tb", "device_id": "d"}', {}, 400, "invalid_request"),
    ("DEL in id", b'{"user_id": "a\x7fb", "device_id": "d"}', {}, 400, "invalid_request"),
    ("C1 control", b'{"user_id": "a\\u0085b", "device_id": "d"}', {}, 400, "invalid_request"),
    ("invalid utf-8", b'{"user_id": "\xff\xfe", "device_id": "d"}', {}, 400, "invalid_request"),
    ("empty body", b"", {}, 400, "invalid_request"),
    (
        "body over limit",
        b'{"user_id": "' + b"u" * 5000 + b'", "device_id": "d"}',
        {},
        413,
        "payload_too_large",
    ),
    (
        "no idempotency key",
        b'{"user_id": "u", "device_id": "d"}',
        {"Idempotency-Key": ""},
        400,
        "invalid_request",
    ),
    (
        "300-char idempotency key",
        b'{"user_id": "u", "device_id": "d"}',
        {"Idempotency-Key": "k" * 300},
        400,
        "invalid_request",
    ),
    (
        "space in idempotency key",
        b'{"user_id": "u", "device_id": "d"}',
        {"Idempotency-Key": "a b"},
        400,
        "invalid_request",
    ),
    (
        "text/plain",
        b'{"user_id": "u", "device_id": "d"}',
        {"Content-Type": "text/plain"},
        415,
        "unsupported_media_type",
    ),
    (
        "no content type",
        b'{"user_id": "u", "device_id": "d"}',
        {"Content-Type": ""},
        415,
        "unsupported_media_type",
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "headers", "status", "code"), CASES, ids=[c[0] for c in CASES]
)
async def test_bad_claim_input_is_refused_with_envelope_and_no_state_change(
    gateway: Gateway, name: str, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    campaign = await gateway.put_campaign(stock=1)
    all_headers: dict[str, Any] = {**GOOD, "Idempotency-Key": "bad-input-key", **headers}
    for header, value in headers.items():
        if value == "":
            del all_headers[header]
    response = await gateway.public.post(
        f"/v1/campaigns/{campaign}/claims", data=body, headers=all_headers
    )
    assert response.status == status
    payload = await response.json()
    assert payload["error"]["code"] == code
    assert payload["error"]["message"]
    assert payload["error"]["request_id"] == response.headers["X-Request-Id"]
    stats = await gateway.stats(campaign)
    assert (stats["stock_left"], stats["granted"], stats["rejected"]) == (1, 0, {})
    # Still healthy, and the same key is free for a good request.
    good = await gateway.claim(campaign, key="bad-input-key")
    assert good.status == 201


async def test_control_char_in_campaign_path_is_400(gateway: Gateway) -> None:
    response = await gateway.public.post(
        "/v1/campaigns/a%07b/claims",
        json={"user_id": "u", "device_id": "d"},
        headers={**GOOD, "Idempotency-Key": "k"},
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_request"


async def test_unknown_route_and_method_use_the_envelope(gateway: Gateway) -> None:
    response = await gateway.public.get("/v1/nothing-here")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
    response = await gateway.public.delete("/v1/campaigns/x/claims")
    assert response.status == 405
    assert (await response.json())["error"]["code"] == "method_not_allowed"


ADMIN_CASES = [
    (
        "naive time",
        {
            "starts_at": "2020-01-01T00:00:00",
            "ends_at": "2030-01-01T00:00:00Z",
            "benefit": {"kind": "voucher"},
        },
    ),
    (
        "end before start",
        {
            "starts_at": "2030-01-01T00:00:00Z",
            "ends_at": "2020-01-01T00:00:00Z",
            "benefit": {"kind": "voucher"},
        },
    ),
    (
        "negative stock",
        {
            "starts_at": "2020-01-01T00:00:00Z",
            "ends_at": "2030-01-01T00:00:00Z",
            "stock": -1,
            "benefit": {"kind": "voucher"},
        },
    ),
    (
        "unknown kind",
        {
            "starts_at": "2020-01-01T00:00:00Z",
            "ends_at": "2030-01-01T00:00:00Z",
            "benefit": {"kind": "cash"},
        },
    ),
    (
        "unknown supplier",
        {
            "starts_at": "2020-01-01T00:00:00Z",
            "ends_at": "2030-01-01T00:00:00Z",
            "benefit": {"kind": "direct_recharge", "suppliers": ["ghost"]},
        },
    ),
    (
        "zero per-user limit",
        {
            "starts_at": "2020-01-01T00:00:00Z",
            "ends_at": "2030-01-01T00:00:00Z",
            "per_user_limit": 0,
            "benefit": {"kind": "voucher"},
        },
    ),
]


@pytest.mark.parametrize(("name", "body"), ADMIN_CASES, ids=[c[0] for c in ADMIN_CASES])
async def test_bad_campaign_definition_is_400_and_creates_nothing(
    gateway: Gateway, name: str, body: dict[str, Any]
) -> None:
    response = await gateway.admin_call("PUT", "/admin/campaigns/bad-one", body)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_request"
    missing = await gateway.admin_call("GET", "/admin/campaigns/bad-one/stats")
    assert missing.status == 404
