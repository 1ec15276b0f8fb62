"""Known failure kinds, raised anywhere in a request and turned into the error envelope."""

from __future__ import annotations

import math
from collections.abc import Mapping


class ApiError(Exception):
    """An answer with the SPEC's envelope: status, snake_case code, human message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        # Set on a replayed rejection: the answer carries the first request's id.
        self.request_id: str | None = None


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def unauthorized(message: str = "missing or unknown credentials") -> ApiError:
    return ApiError(401, "unauthorized", message)


def unavailable(outcome_unknown: bool = False) -> ApiError:
    """503: Valkey unreachable or not ready. `outcome_unknown`: the call may have been carried
    out, so the client must retry with the same Idempotency-Key (SPEC 3.1)."""
    headers = {"Retry-After": "1"}
    if outcome_unknown:
        headers["Outcome-Unknown"] = "true"
    return ApiError(503, "unavailable", "state store unreachable; retry shortly", headers)


# The message for each business code; one place so replays and live answers read the same.
MESSAGES = {
    "sold_out": "the campaign has no stock left",
    "daily_stock_exhausted": "today's stock is gone; retry after the indicated time",
    "budget_exhausted": "the campaign's budget is spent",
    "limit_reached": "this user or device already has its allowance for this campaign",
    "campaign_not_active": "the campaign is paused, not started or ended",
    "campaign_not_found": "no such campaign",
    "rate_limited": "too many requests; retry after the indicated time",
    "risk_denied": "request denied",
    "challenge_required": "a challenge is required before this request can proceed",
    "idempotency_key_reused": "this Idempotency-Key was used with a different request",
    "request_in_progress": "a request with this Idempotency-Key is still being decided",
    "overloaded": "the gateway is shedding load; retry shortly",
    "voucher_not_found": "no such voucher for this user",
    "voucher_redeemed": "the voucher has already been redeemed",
    "voucher_frozen": "the voucher is frozen",
    "voucher_expired": "the voucher has expired",
    "voucher_revoked": "the voucher has been revoked",
    "redemption_pending": "a redemption of this voucher is in flight; retry once it settles",
    "suppliers_unavailable": "no supplier can deliver right now; the voucher stays redeemable",
    "pool_empty": "no card secrets left to deliver; the voucher stays redeemable",
    "redemption_not_found": "no such redemption",
    "forbidden": "this admin user's role may not do this",
}

STATUS = {
    "sold_out": 409,
    "daily_stock_exhausted": 409,
    "budget_exhausted": 409,
    "limit_reached": 409,
    "campaign_not_active": 409,
    "campaign_not_found": 404,
    "rate_limited": 429,
    "risk_denied": 403,
    "challenge_required": 403,
    "idempotency_key_reused": 422,
    "request_in_progress": 409,
    "overloaded": 503,
    "voucher_not_found": 404,
    "voucher_redeemed": 409,
    "voucher_frozen": 409,
    "voucher_expired": 409,
    "voucher_revoked": 409,
    "redemption_pending": 409,
    "suppliers_unavailable": 503,
    "pool_empty": 503,
    "redemption_not_found": 404,
    "forbidden": 403,
}


def rate_limited(retry_ms: float, limit: int | None = None) -> ApiError:
    """429 with Retry-After and RateLimit-* headers (seconds, rounded up, at least 1)."""
    seconds = str(max(1, math.ceil(retry_ms / 1000)))
    headers = {"Retry-After": seconds, "RateLimit-Remaining": "0", "RateLimit-Reset": seconds}
    if limit is not None:
        headers["RateLimit-Limit"] = str(limit)
    return business("rate_limited", headers)


def business(code: str, headers: Mapping[str, str] | None = None) -> ApiError:
    """The ApiError for a business outcome code, with its fixed status and message."""
    return ApiError(STATUS[code], code, MESSAGES[code], headers)


def replayed(code: str, request_id: str) -> ApiError:
    """A stored refusal answered again: its code, and the id of the request that got it."""
    error = business(code, {"Idempotent-Replayed": "true"})
    error.request_id = request_id
    return error
