"""What Valkey keeps for vouchers and idempotency, and the outcome every script answers first.

A claim's voucher record, at `gw:{XY}:v:<code>` (written by `claims/lua/claim.lua`, read by
the redemption and admin scripts), is its fields joined by SEP, state letter first:
- granted: `i|expires ms|campaign|owner|fingerprint`, then the device id when the campaign
  counts devices (`per_device_limit` > 0), so a revoke can give its allowance back; `f` frozen;
  `r` being redeemed and `d` delivered with the redemption id in place of the device;
- revoked (`admin/lua/voucher_revoke.lua`): `v|expires ms|campaign|owner|fingerprint|returned`,
  returned `1` when the unit went back to stock, else `0`; a replayed claim still answers its
  201, a redemption 409 `voucher_revoked`;
- refused (kept for replay, no voucher): `x|outcome|campaign|request id|fingerprint`.
A redemption's idempotency record (`keys.idempotency`) is `fingerprint|R|redemption id`, or
`fingerprint|E|outcome|request id` for a stored refusal.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum

SEP = "\x1f"  # no id can hold it (request validation), so records split unambiguously
IDEMPOTENCY_TTL_S = 86_400  # SPEC 3.1: final outcomes are replayed for at least 24 h


class Outcome(IntEnum):
    """A script's first reply; one numbering for the claim, redeem-guard and redeem scripts."""

    OK = 0  # claim granted, guard passed, redemption delivered
    REPLAY = 1
    KEY_REUSED = 2
    NONCE_SPENT = 3
    NOT_FOUND = 4  # the campaign (claim) or the voucher (redeem)
    RATE_LIMITED = 5
    DENIED = 6  # claim: risk_denied; redeem guard: locked out after failed attempts
    CHALLENGE = 7
    NOT_ACTIVE = 8
    LIMIT_REACHED = 9
    SOLD_OUT = 10
    RESERVED = 11  # redemption reserved: a supplier is to be called
    REDEEMED = 12
    FROZEN = 13
    EXPIRED = 14
    IN_PROGRESS = 15
    POOL_EMPTY = 16
    ACCOUNT_MISSING = 17
    DAILY_STOCK_EXHAUSTED = 18  # today's daily_stock is gone; b = ms to the next local midnight
    DAILY_LIMIT_REACHED = 19  # the user's per_user_daily_limit; b = ms to the next midnight
    BUDGET_EXHAUSTED = 20
    REVOKED = 21
    REDEMPTION_PENDING = 22  # revoke refused: a direct recharge is in flight


# Outcomes that are a business refusal with one fixed error code, live or replayed.
REFUSALS = {
    Outcome.DENIED: "risk_denied",
    Outcome.CHALLENGE: "challenge_required",
    Outcome.NOT_ACTIVE: "campaign_not_active",
    Outcome.LIMIT_REACHED: "limit_reached",
    Outcome.SOLD_OUT: "sold_out",
    Outcome.REDEEMED: "voucher_redeemed",
    Outcome.FROZEN: "voucher_frozen",
    Outcome.EXPIRED: "voucher_expired",
    Outcome.IN_PROGRESS: "request_in_progress",
    Outcome.POOL_EMPTY: "pool_empty",
    Outcome.DAILY_STOCK_EXHAUSTED: "daily_stock_exhausted",
    Outcome.DAILY_LIMIT_REACHED: "limit_reached",
    Outcome.BUDGET_EXHAUSTED: "budget_exhausted",
    Outcome.REVOKED: "voucher_revoked",
    Outcome.REDEMPTION_PENDING: "redemption_pending",
}


def fingerprint(*parts: str) -> str:
    """A short digest of what makes two requests 'the same' for idempotency."""
    return hashlib.blake2b(SEP.join(parts).encode(), digest_size=8).hexdigest()
