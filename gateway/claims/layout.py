"""The claim function's calling convention by name: its KEYS, its ARGV and its replies.

`lua/claim.lua` names the same fields in the same order, in its header and in its offsets;
tests/gateway/test_claim_layout.py holds the two together.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from gateway.records import Outcome

HEAD_KEYS = ("campaign", "rejections", "events")  # a batch's first keys, then each claim's:
# List logs and rules: 0 or more; nonce and pass_nonce: 0 or 1.
CLAIM_KEYS = ("voucher", "list_logs", "rule_keys", "nonce", "pass_nonce")


def claim_keys(
    voucher: str,
    list_logs: list[str],
    rule_keys: list[str],
    nonce: list[str],
    pass_nonce: list[str],
) -> list[str]:
    """One claim's keys in CLAIM_KEYS order (`nonce`, `pass_nonce`: its key, or none)."""
    return [voucher, *list_logs, *rule_keys, *nonce, *pass_nonce]


class Head(NamedTuple):
    """A batch's first arguments, taken from the claim that opens it."""

    now_ms: int
    now_text: str  # the same instant as RFC 3339 text, for the events
    campaign_id: str
    client_id: str
    rules: int  # velocity rules each claim of the batch carries
    nonce: int  # 1 when each claim carries a nonce key
    passes: int  # 1 when each claim carries a challenge pass's nonce key


class ClaimArgs(NamedTuple):
    """One claim's arguments, followed by a RuleArgs for each rule it carries."""

    fp: str  # the request's fingerprint, which a replay must match
    claim_id: str
    masked_code: str
    user_id: str
    device_id: str
    ip: str
    request_id: str
    user_field: bytes  # the claimant's allowance fields in the campaign hash
    device_field: bytes


class RuleArgs(NamedTuple):
    """One velocity rule a claim carries (its counter is among the claim's `rule_keys`)."""

    rule_id: str
    kind: str  # 'count' | 'distinct'
    threshold: int
    window_ms: int
    member: str  # what a distinct rule counts; '' for a count
    effect: str  # 'deny' | 'challenge' | 'shadow'


class Reply(NamedTuple):
    """One claim's entries of the function's flat answer; `a` and `b` depend on the outcome."""

    outcome: int  # one of CLAIM_OUTCOMES
    a: Any  # OK: voucher expiry (ms); REPLAY: the stored record; RATE_LIMITED: limit index
    b: Any  # OK: stock left; RATE_LIMITED: retry after; DAILY_*: ms to the next local midnight
    fired: bytes  # the 1-based indexes of the rules that hit, comma separated


CLAIM_OUTCOMES = (
    Outcome.OK,
    Outcome.REPLAY,
    Outcome.NONCE_SPENT,
    Outcome.NOT_FOUND,
    Outcome.RATE_LIMITED,
    Outcome.DENIED,
    Outcome.CHALLENGE,
    Outcome.NOT_ACTIVE,
    Outcome.LIMIT_REACHED,
    Outcome.SOLD_OUT,
    Outcome.BUDGET_EXHAUSTED,
    Outcome.DAILY_STOCK_EXHAUSTED,
    Outcome.DAILY_LIMIT_REACHED,
)
# Refusals that last until the next local midnight: answered with Retry-After, not stored.
DAILY_OUTCOMES = (Outcome.DAILY_STOCK_EXHAUSTED, Outcome.DAILY_LIMIT_REACHED)


def outcome_constants() -> str:
    """The claim function's outcomes as Lua locals, named and numbered as in `Outcome`."""
    names = ", ".join(outcome.name for outcome in CLAIM_OUTCOMES)
    numbers = ", ".join(str(int(outcome)) for outcome in CLAIM_OUTCOMES)
    return f"local {names} =\n  {numbers}\n"
