"""What one load-test process saw: every grant, every delivery, every outcome.

The ledger is in memory per process; `dump`/`load` write it as JSON so that the invariant CLI
can merge the ledgers of several processes. Card secrets are kept only as a SHA-256
fingerprint: enough to spot a secret handed out twice, useless to anyone reading the report.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True)
class Grant:
    """A 201 claim answer, with the request that earned it."""

    claim_id: str
    user_id: str
    device_id: str
    idempotency_key: str
    voucher_code: str


@dataclass(frozen=True)
class Delivery:
    """A redemption answered `delivered`; `card` is the card-secret fingerprint or ""."""

    redemption_id: str
    voucher_code: str
    kind: str
    card: str = ""


def card_fingerprint(card_no: str, secret: str) -> str:
    """A stable fingerprint of one card number + secret pair (the secret never leaves it)."""
    return hashlib.sha256(f"{card_no}\0{secret}".encode()).hexdigest()[:32]


@dataclass
class Ledger:
    """Grants, deliveries, ambiguous claim attempts and an outcome tally."""

    grants: list[Grant] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    ambiguous_claims: int = 0  # transport errors / 5xx: the gateway may have granted unseen
    outcomes: Counter[str] = field(default_factory=Counter)
    stats_before: dict[str, Any] | None = None
    guessers: int = 0  # code guessers started (their lockout is judged per guesser)
    to_redeem: deque[Grant] = field(default_factory=lambda: deque(maxlen=10_000))

    def record_grant(self, grant: Grant, *, queue_for_redemption: bool = True) -> None:
        """Remember a 201 answer; optionally offer its voucher to the redemption wave."""
        self.grants.append(grant)
        if queue_for_redemption:
            self.to_redeem.append(grant)

    def record_delivery(self, delivery: Delivery) -> None:
        """Remember a `delivered` redemption."""
        self.deliveries.append(delivery)

    def record_outcome(self, route: str, status: int, code: str = "") -> None:
        """Count one answer as `route status [code]`."""
        self.outcomes[f"{route} {status} {code}".rstrip()] += 1

    def next_to_redeem(self) -> Grant | None:
        """The oldest grant nobody has redeemed yet, or None."""
        return self.to_redeem.popleft() if self.to_redeem else None

    def merge(self, other: Ledger) -> None:
        """Add another process's records to this ledger."""
        self.grants.extend(other.grants)
        self.deliveries.extend(other.deliveries)
        self.ambiguous_claims += other.ambiguous_claims
        self.guessers += other.guessers
        self.outcomes.update(other.outcomes)
        if self.stats_before is None:
            self.stats_before = other.stats_before

    def dump(self, path: Path) -> None:
        """Write the ledger as JSON (no secrets: card fields are fingerprints)."""
        doc = {
            "grants": [asdict(g) for g in self.grants],
            "deliveries": [asdict(d) for d in self.deliveries],
            "ambiguous_claims": self.ambiguous_claims,
            "outcomes": dict(self.outcomes),
            "stats_before": self.stats_before,
            "guessers": self.guessers,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, path: Path) -> Ledger:
        """Read a ledger written by `dump`."""
        doc = orjson.loads(path.read_bytes())
        return cls(
            grants=[Grant(**g) for g in doc.get("grants", [])],
            deliveries=[Delivery(**d) for d in doc.get("deliveries", [])],
            ambiguous_claims=int(doc.get("ambiguous_claims", 0)),
            outcomes=Counter(doc.get("outcomes", {})),
            stats_before=doc.get("stats_before"),
            guessers=int(doc.get("guessers", 0)),
        )
