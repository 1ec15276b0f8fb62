"""Voucher codes and ids that carry their own shard tag and a check.

A voucher code is 20 Crockford base32 characters: the campaign's 2-character shard tag, 16
random characters (80 bits from the OS CSPRNG), and 2 check characters (10 bits of BLAKE2b over the
rest). Typos and ~99.9 % of guesses fail the check and are refused before Redis. Input is
normalised the Crockford way: case-insensitive, I/L read as 1, O as 0, hyphens and spaces
ignored, so `abcd-efgh-...` works.
"""

from __future__ import annotations

import hashlib

from gateway import randomness
from gateway.keys import CROCKFORD

CODE_LENGTH = 20
_DECODE = {c: c for c in CROCKFORD} | {"I": "1", "L": "1", "O": "0"}


_PAIRS = [a + b for a in CROCKFORD for b in CROCKFORD]  # every 10-bit value as 2 characters


def _encode(data: bytes) -> str:
    """Crockford base32 of 10 bytes: 16 characters, most significant first."""
    n = int.from_bytes(data, "big")
    return "".join([_PAIRS[(n >> shift) & 1023] for shift in (70, 60, 50, 40, 30, 20, 10, 0)])


def _check(body: str) -> str:
    digest = hashlib.blake2b(body.encode(), digest_size=2).digest()
    n = int.from_bytes(digest, "big") >> 6  # 10 bits
    return CROCKFORD[n >> 5] + CROCKFORD[n & 31]


def new_voucher_code(tag: str) -> str:
    """A fresh code in the given shard tag: 80 random bits plus a 10-bit check."""
    body = tag + _encode(randomness.token_bytes(10))
    return body + _check(body)


def normalise_code(raw: str) -> str | None:
    """The canonical code, or None when it is malformed or fails its check."""
    if len(raw) > 64:
        return None
    chars = []
    for ch in raw.upper():
        if ch in "- ":
            continue
        mapped = _DECODE.get(ch)
        if mapped is None:
            return None
        chars.append(mapped)
    code = "".join(chars)
    if len(code) != CODE_LENGTH or _check(code[:-2]) != code[-2:]:
        return None
    return code


def code_tag(code: str) -> str:
    return code[:2]


def mask_code(code: str) -> str:
    """What events and logs show of a code: enough to correlate, never enough to redeem."""
    return f"{code[:4]}…{code[-3:]}"


def claim_id_for(code: str) -> str:
    """The claim id, derived from the code (nothing extra stored) without revealing it."""
    return "clm_" + hashlib.blake2b(code.encode(), digest_size=10, person=b"claim-id").hexdigest()


def new_redemption_id(tag: str) -> str:
    """A redemption id in the voucher's shard tag (so GET finds its slot without a lookup)."""
    return "rdm_" + tag + _encode(randomness.token_bytes(10))


def redemption_tag(redemption_id: str) -> str | None:
    if len(redemption_id) != 22 or not redemption_id.startswith("rdm_"):
        return None
    tag = redemption_id[4:6]
    if any(c not in CROCKFORD for c in redemption_id[4:]):
        return None
    return tag
