"""SPEC §6 request signing: hex HMAC-SHA256 over a canonical string, with a clock-skew window.

Canonical string: METHOD \\n PATH \\n TIMESTAMP \\n NONCE \\n hex(sha256(body)), PATH being the raw
path plus `?query` when there is one. `verify` checks headers, skew and signature; whether a
nonce was seen before is the gateway's job, inside its atomic Redis call
(`SET <nonce_key_suffix> 1 NX PX NONCE_TTL_S * 1000`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Final, Literal

import msgspec

Reason = Literal["missing", "bad_timestamp", "stale", "bad_signature"]

MAX_SKEW_S: Final = 300
# A nonce must be remembered for longer than any timestamp stays acceptable (2 x skew: from
# `skew` in the past to `skew` in the future), or a replay could outlive its record.
NONCE_TTL_S: Final = 600

_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits only; str.isdigit takes other scripts
_NONCE = re.compile(r"[\x21-\x7e]{1,128}")  # visible ASCII: no space, no newline
_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")


class SignatureCheck(msgspec.Struct, frozen=True):
    """The outcome of `verify`: ok, or the reason it is not."""

    ok: bool
    reason: Reason | None = None


_OK: Final = SignatureCheck(ok=True)


def canonical_string(
    method: str, raw_path_with_query: str, timestamp: str, nonce: str, body: bytes
) -> bytes:
    """Return the exact bytes that are signed (method upper-cased, body as its sha256 hex)."""
    digest = hashlib.sha256(body).hexdigest()
    text = f"{method.upper()}\n{raw_path_with_query}\n{timestamp}\n{nonce}\n{digest}"
    return text.encode("utf-8")


def sign(
    secret: str, method: str, raw_path_with_query: str, timestamp: str, nonce: str, body: bytes
) -> str:
    """Return the lowercase hex HMAC-SHA256 of the canonical string, keyed with secret (UTF-8)."""
    message = canonical_string(method, raw_path_with_query, timestamp, nonce, body)
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify(
    secret: str,
    method: str,
    path: str,
    timestamp_header: str | None,
    nonce_header: str | None,
    signature_header: str | None,
    body: bytes,
    now: float,
    max_skew_s: int = MAX_SKEW_S,
) -> SignatureCheck:
    """Accept only a well-formed, fresh (|now - ts| <= max_skew_s), correctly signed request.

    A nonce outside 1-128 visible ASCII cannot belong to a valid signature: bad_signature.
    The signature is compared in constant time.
    """
    if not (timestamp_header and nonce_header and signature_header):
        return SignatureCheck(ok=False, reason="missing")
    if not _TIMESTAMP.fullmatch(timestamp_header):
        return SignatureCheck(ok=False, reason="bad_timestamp")
    if abs(now - int(timestamp_header)) > max_skew_s:
        return SignatureCheck(ok=False, reason="stale")
    if not (_NONCE.fullmatch(nonce_header) and _SIGNATURE.fullmatch(signature_header)):
        return SignatureCheck(ok=False, reason="bad_signature")
    expected = sign(secret, method, path, timestamp_header, nonce_header, body)
    if not hmac.compare_digest(expected, signature_header.lower()):
        return SignatureCheck(ok=False, reason="bad_signature")
    return _OK


def nonce_key_suffix(client_id: str, nonce: str) -> str:
    """Return `nonce:<len(client_id)>:<client_id>:<nonce>`, unique per (client, nonce) pair.

    The length prefix keeps pairs apart even when a client id contains ':'.
    """
    return f"nonce:{len(client_id)}:{client_id}:{nonce}"
