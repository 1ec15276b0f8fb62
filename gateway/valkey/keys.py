"""Every Redis key the gateway touches, in one table.

Keys that one script call touches share a hash tag, so every call is single-slot in a cluster:
- a campaign's keys carry the campaign's *shard tag* `{XY}`: two Crockford characters derived
  from the campaign id (1,024 tags). Voucher codes and redemption ids start with the same two
  characters, so the redeem path finds the slot from the code alone, with no lookup;
- the redeem guard's counters (failed attempts per IP/device, redeem-route limits) share `{rg}`;
- global, rarely written keys (campaign registry, risk lists, breaker state) live outside the hot
  path and need no shared tag.
Variable parts come last; client ids cannot contain ':' (config validation), so keys with two
variable parts stay unambiguous.

What a grant keeps is small, since it is most of a sale's memory: one key, the voucher, which
is also the claim's idempotency record (its code is derived from the client, campaign and
Idempotency-Key: gateway/codes.py), and the claimant's allowance fields in the campaign hash,
named by a digest of the user or device id (`allowance_field`). A redemption's idempotency
record is named by a 16-character digest of (route, client, key), not by the client's key
itself (1-255 characters).
"""

from __future__ import annotations

import base64
import hashlib
import zlib

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

CAMPAIGNS = "gw:campaigns"  # set of campaign ids (admin, tail and stats)
EVENT_STREAMS = "gw:event-streams"  # set of stream keys that carry events
ADMIN_EVENTS = "gw:{admin}:events"  # admin changes not tied to a campaign
LEDGER_GROUP = "ledger"  # the admin backend's consumer group on every event stream
GUARD_TAG = "rg"
# The slot of the shared breaker hash (supplier_pool.shared_state.BREAKERS_KEY): its script
# appends breaker openings to this tag's stream.
SUPPLIER_TAG = "suppliers"


def shard_tag(campaign_id: str) -> str:
    """Two Crockford characters, stable for a campaign id: its slot in a cluster."""
    n = zlib.crc32(campaign_id.encode()) & 0x3FF
    return CROCKFORD[n >> 5] + CROCKFORD[n & 31]


def campaign(tag: str, campaign_id: str) -> str:
    """Hash of a campaign's settings and counters, and of its allowances.

    The allowances are a field per user and per device (`allowance_field`, grants so far), so
    one HMGET and one HSET of the claim script cover every counter a grant moves. The hash
    grows with the claimants: read it by field (HMGET), never whole.
    """
    return f"gw:{{{tag}}}:c:{campaign_id}"


def allowance_field(kind: str, identity: str) -> bytes:
    """A claimant's allowance field in the campaign hash: `kind` (`u` user, `d` device) and
    the 8-byte BLAKE2b of the id.

    9 bytes whatever the id (1-128 characters): two per grant, and a sale's memory is mostly
    these fields. 64 bits keep a collision (two claimants sharing an allowance: a refusal,
    never an extra grant) out of reach, ~3e-8 for a million claimants of one campaign.
    """
    return kind.encode() + hashlib.blake2b(identity.encode(), digest_size=8).digest()


def rejections(tag: str, campaign_id: str) -> str:
    return f"gw:{{{tag}}}:rej:{campaign_id}"


def card_pool(tag: str, campaign_id: str) -> str:
    return f"gw:{{{tag}}}:cards:{campaign_id}"


def idempotency(tag: str, route: str, client_id: str, key: str) -> str:
    """`gw:{XY}:i:` + BLAKE2b-96 of route, client and key, URL-safe base64 (16 characters).

    For redemptions (a claim's record is its voucher). 96 bits keep collisions out of reach
    (~1e-11 for a billion live records), and the key is 26 characters whatever the client sent.
    The separator cannot occur in a route or client id.
    """
    digest = hashlib.blake2b(f"{route}\x1f{client_id}\x1f{key}".encode(), digest_size=12)
    return f"gw:{{{tag}}}:i:{base64.urlsafe_b64encode(digest.digest()).decode()}"


def voucher(tag: str, code: str) -> str:
    return f"gw:{{{tag}}}:v:{code}"


def redemption(tag: str, redemption_id: str) -> str:
    return f"gw:{{{tag}}}:r:{redemption_id}"


def pending(tag: str) -> str:
    """Sorted set of redemptions in flight (score: ms when they need a look)."""
    return f"gw:{{{tag}}}:pending"


def events(tag: str) -> str:
    return f"gw:{{{tag}}}:events"


def nonce(tag: str, suffix: str) -> str:
    return f"gw:{{{tag}}}:{suffix}"


def scoped(tag: str, suffix: str) -> str:
    """A limit or risk-counter key in a tag's slot (suffix from ratelimit/risk key builders)."""
    return f"gw:{{{tag}}}:{suffix}"


def campaign_scoped(tag: str, campaign_id: str, suffix: str) -> str:
    """A per-campaign limit or risk-counter key; the length prefix keeps any id unambiguous."""
    return f"gw:{{{tag}}}:k:{len(campaign_id)}:{campaign_id}:{suffix}"


def all_tags() -> list[str]:
    return [a + b for a in CROCKFORD for b in CROCKFORD]
