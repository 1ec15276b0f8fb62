"""Which answers are business as usual (SPEC §3) and which are failures, per kind of request.

Pure functions over (status, error code, decoded body): the Locust users call them, the tests
call them without Locust.
"""

from __future__ import annotations

from typing import Any

import orjson

# status -> error codes that are a normal answer (None: any body, it is a success status)
Expected = dict[int, frozenset[str] | None]

CLAIM: Expected = {
    201: None,
    409: frozenset({"sold_out", "limit_reached", "campaign_not_active"}),
    429: frozenset({"rate_limited"}),
    403: frozenset({"risk_denied", "challenge_required"}),
}
REDEEM: Expected = {
    200: None,
    202: None,
    409: frozenset({"voucher_redeemed", "voucher_frozen", "voucher_expired"}),
    429: frozenset({"rate_limited"}),
    403: frozenset({"risk_denied", "challenge_required"}),
}
GUESS: Expected = {
    404: frozenset({"voucher_not_found"}),
    429: frozenset({"rate_limited"}),
    403: frozenset({"risk_denied", "challenge_required"}),
}
# 503s decided before any grant could happen: the claim was certainly not granted.
_NOT_GRANTED_5XX = frozenset({"overloaded", "unavailable"})
# Claim outcomes stored with the idempotency key (SPEC §3.1): a replay must repeat them.
_STORED_CLAIM_CODES = frozenset({"limit_reached", "campaign_not_active"})


def decode(content: bytes | None) -> dict[str, Any] | None:
    """The JSON object in a response body, or None when there is none."""
    if not content:
        return None
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def error_code(doc: dict[str, Any] | None) -> str:
    """`error.code` of an error envelope, or ""."""
    error = doc.get("error") if doc else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else ""


def problem(expected: Expected, status: int, code: str) -> str | None:
    """None when (status, code) is a normal answer, else why it is a failure."""
    if status not in expected:
        return f"unexpected {status} {code}".rstrip() if status else "no response"
    codes = expected[status]
    if codes is not None and code not in codes:
        return f"unexpected {status} {code or '(no error code)'}"
    return None


def grant_problem(doc: dict[str, Any] | None) -> str | None:
    """None when a 201 body carries claim_id and voucher.code, else what is missing."""
    voucher = doc.get("voucher") if doc else None
    if not doc or not isinstance(doc.get("claim_id"), str):
        return "201 without claim_id"
    if not isinstance(voucher, dict) or not isinstance(voucher.get("code"), str):
        return "201 without voucher.code"
    return None


def claim_maybe_granted(status: int, code: str) -> bool:
    """True when a claim's fate is unknown to the client (no answer, or an unexplained 5xx)."""
    return status == 0 or (status >= 500 and code not in _NOT_GRANTED_5XX)


def replay_problem(
    first: tuple[int, dict[str, Any] | None],
    again: tuple[int, dict[str, Any] | None],
    replayed_header: str,
) -> str | None:
    """None when a same-key, same-body retry answered as SPEC §3.1 requires.

    A stored outcome (201, limit_reached, campaign_not_active) comes back identical with
    `Idempotent-Replayed: true`. A retry that is rate-limited, shed or risk-blocked is fine:
    those answers are not stored. `sold_out` may come from the in-process flag, unstored.
    """
    (status1, doc1), (status2, doc2) = first, again
    if status2 in (429, 503, 403):
        return None
    if status1 == 201:
        if status2 != 201 or doc1 != doc2:
            return f"replay of 201 answered {status2} {error_code(doc2)} / different body"
        return None if replayed_header == "true" else "replayed 201 without Idempotent-Replayed"
    code1, code2 = error_code(doc1), error_code(doc2)
    if code1 in _STORED_CLAIM_CODES and (status2, code2) != (status1, code1):
        return f"replay of {status1} {code1} answered {status2} {code2}"
    return None
