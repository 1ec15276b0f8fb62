"""What a batch of new events changes in the ledger's projections, computed in memory.

Pure: given the events (in stream order), it returns the rows and counter deltas that
backend/ledger.py writes in the batch's transaction. It runs before that transaction, while the
previous batch commits, so it reads nothing from the database: a grant's expiry is left to the
transaction (the campaign's voucher lifetime as committed) unless this batch configured it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from backend.events import COLUMNS, Event

# A voucher's state after each event of its life (expiry is computed when read: no event).
STATE_AFTER = {
    "voucher.frozen": "frozen",
    "voucher.unfrozen": "issued",
    "voucher.revoked": "revoked",
    "redemption.reserved": "redeeming",
    "redemption.delivered": "redeemed",
    "redemption.failed": "issued",
}
CAMPAIGN_CONFIG = ("name", "starts_ms", "voucher_ttl_s", "unit_cost", "currency")


def vkey(e: Event) -> str:
    """A voucher's ledger key: its `claim_id` (the code, encrypted), which every event of its
    life carries; events written before they all did are matched by campaign, masked code and
    owner (see schema.vouchers)."""
    claim_id = e.get("claim_id")
    if claim_id:
        return claim_id
    return f"{e.fields['campaign_id']}\x1f{e.fields['voucher_code']}\x1f{e.fields['user_id']}"


def utc_day(ts_ms: int) -> str:
    """`YYYY-MM-DD` of the instant, in UTC (the supplier report's day)."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).date().isoformat()


def _int(value: str | None) -> int | None:
    return int(value) if value else None


def _flag(e: Event, name: str) -> bool:
    """A yes/no field as the scripts (`1`) and the supplier log (`true`) write it."""
    return e.get(name) in ("1", "true")


@dataclass
class Projection:
    event_rows: list[tuple[Any, ...]] = field(default_factory=list)  # in EVENT_COLUMNS order
    counters: Counter[tuple[str, str]] = field(default_factory=Counter)
    minutes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    campaigns: list[dict[str, Any]] = field(default_factory=list)
    grants: list[dict[str, Any]] = field(default_factory=list)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    supplier_calls: list[dict[str, Any]] = field(default_factory=list)
    breaker_openings: list[dict[str, Any]] = field(default_factory=list)
    # Grants (rows of `grants`) of campaigns this batch did not configure: their expiry needs
    # the campaign's lifetime from the ledger.
    expiry_unknown: list[dict[str, Any]] = field(default_factory=list)


# The raw ledger's columns (schema.events) in the order `event_row` gives them.
EVENT_COLUMNS = ("stream", "entry_id", "type", "ts", "ts_ms", *COLUMNS, "voucher_masked", "payload")
_NOT_PAYLOAD = frozenset((*COLUMNS, "voucher_code"))
_json = msgspec.json.Encoder()


def event_row(event: Event) -> tuple[Any, ...]:
    """The raw-ledger row: common fields as columns, the rest as a JSON payload."""
    f = event.fields
    columns = tuple(map(f.get, COLUMNS))
    if "" in columns:  # an empty field is no value
        columns = tuple(value or None for value in columns)
    rest = (
        {} if _NOT_PAYLOAD.issuperset(f) else {k: v for k, v in f.items() if k not in _NOT_PAYLOAD}
    )
    return (
        event.stream,
        event.entry_id,
        event.type,
        event.ts,
        event.ts_ms,
        *columns,
        f.get("voucher_code") or None,
        _json.encode(rest).decode(),
    )


class Projector:
    """Folds events into a Projection."""

    def __init__(self) -> None:
        # Voucher lifetimes set by this batch's campaign events, as of the event being folded.
        self.ttl_s: dict[str, int | None] = {}
        self.out = Projection()

    def add(self, event: Event) -> None:
        self.out.event_rows.append(event_row(event))
        handler = _HANDLERS.get(event.type) or _HANDLERS.get(event.type.partition(".")[0])
        if handler is not None:
            handler(self, event)

    def count(self, event: Event, name: str, n: int = 1) -> None:
        self.out.counters[(event.get("campaign_id") or "", name)] += n

    def count_minute(self, event: Event, name: str) -> None:
        self.out.minutes[(event.get("campaign_id") or "", event.ts[:16], name)] += 1

    def by_client(self, event: Event, outcome: str) -> None:
        client = event.get("client_id")
        if client:
            self.count(event, f"client:{client}:{outcome}")


def _granted(p: Projector, e: Event) -> None:
    p.count(e, "granted")
    p.count_minute(e, "granted")
    p.by_client(e, "granted")
    campaign_id, masked, user_id = (
        e.fields["campaign_id"],
        e.fields["voucher_code"],
        e.fields["user_id"],
    )
    row: dict[str, Any] = {
        "vkey": vkey(e),
        "claim_id": e.fields["claim_id"],
        "campaign_id": campaign_id,
        "user_id": user_id,
        "voucher_masked": masked,
        "client_id": e.get("client_id"),
        "device_id": e.get("device_id"),
        "ip": e.get("ip"),
        "granted_ms": e.ts_ms,
        "expires_ms": None,
        "state": "issued",
        "state_order": e.order,
    }
    if campaign_id in p.ttl_s:
        ttl = p.ttl_s[campaign_id]
        row["expires_ms"] = None if ttl is None else e.ts_ms + ttl * 1000
    else:
        p.out.expiry_unknown.append(row)
    p.out.grants.append(row)


def _rejected(p: Projector, e: Event) -> None:
    p.count(e, "rejected:" + e.fields["code"])
    p.count_minute(e, "rejected")
    p.by_client(e, "rejected")


def _risk_hit(p: Projector, e: Event) -> None:
    mode = "shadow" if e.fields["decision"] == "shadow" else "enforce"
    for rule in e.fields["rules"].split(","):
        if rule:
            p.count(e, f"risk:{rule}:{mode}")


def _campaign(p: Projector, e: Event) -> None:
    campaign_id = e.fields["campaign_id"]
    if e.type == "campaign.created":
        p.count(e, "stock_added", int(e.fields.get("stock") or 0))
    elif e.type == "campaign.stock_changed":
        p.count(e, "stock_added", int(e.fields.get("added") or 0))
    if e.type in ("campaign.created", "campaign.updated"):
        row: dict[str, Any] = {"campaign_id": campaign_id, "config_order": e.order}
        for name in CAMPAIGN_CONFIG:
            value = e.get(name)
            row[name] = value if name in ("name", "currency") else _int(value)
        p.out.campaigns.append(row)
        p.ttl_s[campaign_id] = row["voucher_ttl_s"]


def _voucher_life(p: Projector, e: Event) -> None:
    state = STATE_AFTER.get(e.type)
    if state is None:  # redemption.rejected: no voucher of this user's was touched
        p.count(e, "redemption_rejected:" + e.fields["code"])
        return
    if e.type == "redemption.delivered":
        p.count(e, "redeemed")
        p.count_minute(e, "redeemed")
        p.by_client(e, "redeemed")
    elif e.type == "voucher.revoked":
        p.count(e, "revoked")
        if _flag(e, "returned"):
            p.count(e, "returned")
    campaign_id, masked, user_id = (
        e.fields["campaign_id"],
        e.fields["voucher_code"],
        e.fields["user_id"],
    )
    p.out.transitions.append(
        {
            "vkey": vkey(e),
            "campaign_id": campaign_id,
            "user_id": user_id,
            "voucher_masked": masked,
            "state": state,
            "state_order": e.order,
        }
    )


def _supplier_call(p: Projector, e: Event) -> None:
    # Only the pool's own report counts a call: redemption events name a supplier too, but
    # one redemption may make several calls (a query after an unknown outcome, a failover).
    p.out.supplier_calls.append(
        {
            "stream": e.stream,
            "entry_id": e.entry_id,
            "supplier": e.fields["supplier"],
            "day": utc_day(e.ts_ms),
            "outcome": e.fields["outcome"],
            "latency_ms": _int(e.get("latency_ms")),
            "failover": int(_flag(e, "failover")),
            "op": e.get("op"),
            "redemption_id": e.get("redemption_id"),
        }
    )


def _breaker_opened(p: Projector, e: Event) -> None:
    p.out.breaker_openings.append(
        {
            "stream": e.stream,
            "entry_id": e.entry_id,
            "supplier": e.fields["supplier"],
            "day": utc_day(e.ts_ms),
            "from_state": e.get("from_state"),
        }
    )


_HANDLERS = {
    "claim.granted": _granted,
    "claim.rejected": _rejected,
    "risk.hit": _risk_hit,
    "campaign": _campaign,
    "voucher": _voucher_life,
    "redemption": _voucher_life,
    "supplier.call": _supplier_call,
    "supplier.breaker_opened": _breaker_opened,
}
