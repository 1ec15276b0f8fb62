"""Card secrets and redemption links sealed with AES-GCM: a random 96-bit nonce each, the
owner's identity as AAD.

What Redis holds for a card is `card_no \\x1f base64(nonce || ciphertext)`. The campaign id
and card number are authenticated, so a sealed secret moved to another card or campaign fails
to open. A link is `base64(nonce || ciphertext)` with its redemption id authenticated, so it
opens for that redemption only.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEP = "\x1f"


def _aad(campaign_id: str, card_no: str) -> bytes:
    return f"{campaign_id}{SEP}{card_no}".encode()


def seal(key: bytes, campaign_id: str, card_no: str, secret: str) -> str:
    """The stored form of one card; the secret never leaves this function in clear."""
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, secret.encode(), _aad(campaign_id, card_no))
    return card_no + SEP + base64.b64encode(nonce + sealed).decode()


def open_card(key: bytes, campaign_id: str, stored: str) -> tuple[str, str]:
    """(card_no, secret) of a sealed card; raises cryptography's InvalidTag if tampered."""
    card_no, _, blob = stored.partition(SEP)
    raw = base64.b64decode(blob)
    secret = AESGCM(key).decrypt(raw[:12], raw[12:], _aad(campaign_id, card_no))
    return card_no, secret.decode()


def _link_aad(redemption_id: str) -> bytes:
    return f"link{SEP}{redemption_id}".encode()


def seal_link(key: bytes, redemption_id: str, url: str) -> str:
    """The stored form of a supplier's redemption link; the url never leaves in clear."""
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, url.encode(), _link_aad(redemption_id))
    return base64.b64encode(nonce + sealed).decode()


def open_link(key: bytes, redemption_id: str, stored: str) -> str:
    """The url of a sealed link; raises cryptography's InvalidTag if tampered or moved."""
    raw = base64.b64decode(stored)
    return AESGCM(key).decrypt(raw[:12], raw[12:], _link_aad(redemption_id)).decode()
