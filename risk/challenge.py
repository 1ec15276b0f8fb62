"""SPEC §6 challenge passes: `X-Challenge-Pass: EXP.NONCE.SIG`, minted by a client's backend
once its captcha provider has verified the user.

`EXP` unix seconds (at most MAX_AHEAD_S ahead), `NONCE` 16-64 of `[A-Za-z0-9_-]`, `SIG` hex
HMAC-SHA256 keyed with the client's `challenge_secret` (UTF-8) over
`challenge-pass\\nCLIENT_ID\\nUSER_ID\\nDEVICE_ID\\nEXP\\nNONCE`. `check_pass` is pure: it
checks form, signature (constant time) and expiry against the clock it is given; whether the
nonce was spent before is the gateway's job, inside the atomic call that the pass lifts a
challenge in (`SET <pass_key_suffix> 1 NX PX`). `mint_pass` is what a client's backend runs
(docs/challenges.md shows it).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Final, Literal

import msgspec

# Why a pass was refused, for metrics only: the caller is told nothing but
# `challenge_required`. "reused" is learned from the atomic call, not here.
Reason = Literal["malformed", "no_secret", "bad_signature", "expired", "too_far_ahead", "reused"]
REASONS: Final[tuple[Reason, ...]] = (
    "malformed",
    "no_secret",
    "bad_signature",
    "expired",
    "too_far_ahead",
    "reused",
)

MAX_AHEAD_S: Final = 600
# A spent nonce is remembered at least as long as a pass naming it can be valid.
SPENT_TTL_S: Final = MAX_AHEAD_S

_PASS = re.compile(r"([0-9]{1,12})\.([A-Za-z0-9_-]{16,64})\.([0-9a-fA-F]{64})")


class PassCheck(msgspec.Struct, frozen=True):
    """The outcome of `check_pass`: ok with the nonce to spend, or the reason it is not."""

    ok: bool
    nonce: str = ""
    reason: Reason | None = None


def pass_message(client_id: str, user_id: str, device_id: str, exp: int | str, nonce: str) -> bytes:
    """The exact bytes a pass signs (`exp` as the pass writes it)."""
    return f"challenge-pass\n{client_id}\n{user_id}\n{device_id}\n{exp}\n{nonce}".encode()


def mint_pass(
    secret: str,
    client_id: str,
    user_id: str,
    device_id: str,
    ttl_s: int = 120,
    nonce: str | None = None,
    now: float | None = None,
) -> str:
    """An `X-Challenge-Pass` value for this user and device, valid for ttl_s (<= 600) seconds.

    Run by the client's backend once its captcha provider has verified the user; needs only
    the standard library (hashlib, hmac, secrets, time).
    """
    exp = int(time.time() if now is None else now) + ttl_s
    nonce = nonce or secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9_-]
    message = f"challenge-pass\n{client_id}\n{user_id}\n{device_id}\n{exp}\n{nonce}"
    signature = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    return f"{exp}.{nonce}.{signature}"


def check_pass(
    secret: str, header: str, client_id: str, user_id: str, device_id: str, now: float
) -> PassCheck:
    """Accept only a well-formed pass for exactly this client, user and device, signed with
    `secret`, unexpired and at most MAX_AHEAD_S ahead of `now`."""
    match = _PASS.fullmatch(header)
    if match is None:
        return PassCheck(ok=False, reason="malformed")
    if not secret:  # an empty key would let anyone mint passes
        return PassCheck(ok=False, reason="no_secret")
    exp_text, nonce, signature = match.groups()
    exp = int(exp_text)
    message = pass_message(client_id, user_id, device_id, exp_text, nonce)
    expected = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        return PassCheck(ok=False, reason="bad_signature")
    if exp <= now:
        return PassCheck(ok=False, reason="expired")
    if exp > now + MAX_AHEAD_S:
        return PassCheck(ok=False, reason="too_far_ahead")
    return PassCheck(ok=True, nonce=nonce)


def pass_key_suffix(client_id: str, nonce: str) -> str:
    """Return `pass:<len(client_id)>:<client_id>:<nonce>`, unique per (client, nonce) pair."""
    return f"pass:{len(client_id)}:{client_id}:{nonce}"
