"""Voucher codes and ids that carry their own shard tag and a check.

A voucher code is 20 Crockford base32 characters: the campaign's 2-character shard tag, 16
characters of secret bits, and 2 check characters (10 bits of BLAKE2b over the rest). A claim's
code is not drawn at random: its 80 bits are a keyed BLAKE2b (a MAC, keyed with a secret
derived from the data key) of the client, the campaign and the claim's Idempotency-Key, so a
claim's voucher key is also its idempotency record (lua/claim.lua) and nobody without the key
can compute a code. A claim's id is the code encrypted under another key derived from the data
key (ClaimIds), so the admin backend can turn a ledger's claim id back into the code and
nobody else can. Typos and ~99.9 % of guesses fail the check and are refused before Redis.
Input is normalised the Crockford way: case-insensitive, I/L read as 1, O as 0, hyphens and
spaces ignored, so `abcd-efgh-...` works.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gateway import randomness
from gateway.valkey.keys import CROCKFORD

CODE_LENGTH = 20
_DECODE = {c: c for c in CROCKFORD} | {"I": "1", "L": "1", "O": "0"}


_PAIRS = [a + b for a in CROCKFORD for b in CROCKFORD]  # every 10-bit value as 2 characters
# Crockford digits as the digits int(..., 32) reads: a code's first 18 characters, one number.
_TO_BASE32 = bytes.maketrans(CROCKFORD.encode(), b"0123456789abcdefghijklmnopqrstuv")
_LOW_BITS = (1 << 38) - 1  # a claim id block's bits below the code: zero, its check
_SECRET_BITS = (1 << 80) - 1


def _encode(data: bytes) -> str:
    """Crockford base32 of 10 bytes: 16 characters, most significant first."""
    n = int.from_bytes(data, "big")
    return "".join([_PAIRS[(n >> shift) & 1023] for shift in (70, 60, 50, 40, 30, 20, 10, 0)])


def _check(body: str) -> str:
    digest = hashlib.blake2b(body.encode(), digest_size=2).digest()
    n = int.from_bytes(digest, "big") >> 6  # 10 bits
    return CROCKFORD[n >> 5] + CROCKFORD[n & 31]


# Keys the code derivation when the app is given no data key (in-process apps, tests): one
# per process, so every app of the process derives the same codes. `gateway serve` always has
# a data key (configured, or generated once into data_dir) and hands it to every worker.
_PROCESS_SECRET = os.urandom(32)


def code_key(data_key: bytes | None) -> bytes:
    """The secret that keys voucher code derivation, derived from the data key.

    Every worker and host serving one Valkey must derive the same codes, or a retried claim
    reaching another worker would be granted a second voucher: they share the data key, as
    they must for card secrets.
    """
    return hashlib.blake2b(
        b"voucher-code", key=data_key or _PROCESS_SECRET, digest_size=32
    ).digest()


def voucher_code_for(
    tag: str, key: bytes, client_id: str, campaign_id: str, idempotency_key: str
) -> str:
    """The code a claim on this campaign with this client's Idempotency-Key grants.

    The same inputs always give the same code, so the code names the claim's idempotency
    record and a retry on any worker finds it; one Idempotency-Key on two campaigns gives
    unrelated codes. The tag (the campaign's) leads the code. Neither ids nor the tag can
    contain the separator (request validation).
    """
    message = f"{tag}\x1f{client_id}\x1f{campaign_id}\x1f{idempotency_key}".encode()
    digest = hashlib.blake2b(message, key=key, digest_size=10, person=b"claim").digest()
    body = tag + _encode(digest)
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


class ClaimIds:
    """Claim ids: a reversible, keyed encryption of the code, so whoever holds the data key
    (the admin backend: audit, claw-back) can turn a ledger's claim id back into the code,
    and nobody else can learn the code from it or make a valid one.

    The code's tag and secret (90 bits; its check characters follow from them) fill one AES
    block whose other 38 bits are zero; AES-256 in single-block ECB mode is a pseudorandom
    permutation of the block, and deterministic encryption of values that are unique anyway
    leaks nothing more than equality, which the id is for. Decrypting something that is not
    ours leaves those 38 bits zero with chance 2^-38: that is the id's integrity check.
    One cipher context is kept and reused: the claim path pays one block per claim.
    """

    def __init__(self, data_key: bytes | None) -> None:
        key = hashlib.blake2b(
            b"claim-id", key=data_key or _PROCESS_SECRET, digest_size=32, person=b"claim-id-key"
        ).digest()
        cipher = Cipher(algorithms.AES256(key), modes.ECB())
        self._encrypt = cipher.encryptor().update
        self._decrypt = cipher.decryptor().update

    def of(self, code: str) -> str:
        """The claim id of a canonical code (codes.normalise_code or voucher_code_for)."""
        block = int(code.encode().translate(_TO_BASE32)[:18], 32) << 38
        return "clm_" + self._encrypt(block.to_bytes(16)).hex()

    def code_of(self, claim_id: str) -> str | None:
        """The code a claim id names; None when it is malformed or was not made with this key."""
        if len(claim_id) != 36 or not claim_id.startswith("clm_"):
            return None
        try:
            sealed = bytes.fromhex(claim_id[4:])
        except ValueError:
            return None
        if sealed.hex() != claim_id[4:]:  # one spelling per id: lower case, no spaces
            return None
        block = int.from_bytes(self._decrypt(sealed), "big")
        if block & _LOW_BITS:
            return None
        value = block >> 38  # the tag's 10 bits, then the secret's 80
        body = _PAIRS[value >> 80] + _encode((value & _SECRET_BITS).to_bytes(10, "big"))
        return body + _check(body)


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
