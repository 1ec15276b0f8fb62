"""A stream entry decoded into a ledger event, or refused with a reason (a dead letter).

The gateway's scripts write flat field/value pairs (gateway/*/lua/*.lua). Every event has
`type` and `ts`; some types need more to be projected (a grant its claim id and masked code).
An entry that lacks them is malformed: it is kept as a dead letter, never silently skipped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

# Fields kept as columns of the raw ledger; the rest of an event goes to its JSON payload.
COLUMNS = (
    "campaign_id",
    "user_id",
    "device_id",
    "ip",
    "client_id",
    "request_id",
    "claim_id",
    "code",
    "actor",
    "actor_ip",
)

# What each type needs beyond type and ts before it can be projected.
REQUIRED: dict[str, tuple[str, ...]] = {
    "claim.granted": ("campaign_id", "claim_id", "voucher_code", "user_id"),
    "claim.rejected": ("campaign_id", "code"),
    "risk.hit": ("rules", "decision"),
    "campaign.created": ("campaign_id",),
    "campaign.updated": ("campaign_id",),
    "campaign.stock_changed": ("campaign_id",),
    "voucher.frozen": ("campaign_id", "voucher_code", "user_id"),
    "voucher.unfrozen": ("campaign_id", "voucher_code", "user_id"),
    "voucher.revoked": ("campaign_id", "voucher_code", "user_id"),
    "redemption.delivered": ("campaign_id", "voucher_code", "user_id"),
    "redemption.reserved": ("campaign_id", "voucher_code", "user_id"),
    "redemption.failed": ("campaign_id", "voucher_code", "user_id"),
    "redemption.rejected": ("code",),
    "supplier.call": ("supplier", "outcome"),
    "supplier.breaker_opened": ("supplier",),
}
# Integer fields whose value the projections add up.
INTEGERS = ("stock", "added", "voucher_ttl_s", "unit_cost", "starts_ms", "latency_ms")
# The widest value each column takes (backend/schema.py): a longer one would fail the whole
# batch's transaction on PostgreSQL, again and again, so it makes the entry a dead letter.
WIDTHS = {
    "type": 64,
    "ts": 40,
    "campaign_id": 128,
    "user_id": 128,
    "device_id": 128,
    "ip": 64,
    "client_id": 128,
    "request_id": 128,
    "claim_id": 64,
    "code": 64,
    "actor": 128,
    "actor_ip": 64,
    "voucher_code": 16,
    "supplier": 128,
    "outcome": 32,
    "op": 8,
    "redemption_id": 64,
    "from_state": 16,
    "currency": 8,
    "name": 256,
}


_UNBOUNDED = 1 << 62
# Every width but a few is at least _FLOOR: an event whose values all fit in it is checked
# against those few only.
_FLOOR = 64
_NARROW = {name: width for name, width in WIDTHS.items() if width < _FLOOR}
_INTEGER_SET = frozenset(INTEGERS)


class Malformed(ValueError):
    """An entry that cannot be a ledger event; the message is the dead letter's reason."""


class Event(msgspec.Struct, frozen=True):
    stream: str
    entry_id: str
    order: int  # the entry id as one sortable number
    type: str
    ts: str
    ts_ms: int
    fields: dict[str, str]

    def get(self, name: str) -> str | None:
        return self.fields.get(name) or None


def entry_order(entry_id: str) -> int:
    """`ms-seq` as one integer that sorts as the stream does."""
    ms, _, seq = entry_id.partition("-")
    return int(ms) * 1_000_000 + int(seq or 0)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise Malformed("not UTF-8") from None
    return str(value)


def _ts_ms(ts: str) -> int:
    # Events written in one millisecond share their ts: a batch parses each once.
    if ts in _ts_seen:
        return _ts_seen[ts]
    if len(_ts_seen) >= 4096:
        _ts_seen.clear()
    _ts_seen[ts] = _parse_ts(ts)
    return _ts_seen[ts]


_ts_seen: dict[str, int] = {}


def _parse_ts(ts: str) -> int:
    try:
        moment = datetime.fromisoformat(ts)
    except ValueError:
        raise Malformed(f"ts: not RFC 3339: {ts[:40]!r}") from None
    if moment.tzinfo is None:
        raise Malformed(f"ts: no time zone: {ts[:40]!r}")
    return int(moment.timestamp() * 1000)


def _too_wide(fields: dict[str, str]) -> bool:
    if max(map(len, fields.values()), default=0) <= _FLOOR:  # only a narrow one can be
        return any(len(fields[name]) > _NARROW[name] for name in _NARROW.keys() & fields.keys())
    return any(len(value) > WIDTHS.get(name, _UNBOUNDED) for name, value in fields.items())


def _check(kind: str, fields: dict[str, str]) -> None:
    required = REQUIRED.get(kind, ())
    if not all(map(fields.get, required)):
        missing = [name for name in required if not fields.get(name)]
        raise Malformed(f"{kind}: missing {', '.join(missing)}")
    if _too_wide(fields):
        for name, width in WIDTHS.items():  # the first in WIDTHS order names the reason
            if len(fields.get(name, "")) > width:
                raise Malformed(f"{kind}: {name} longer than {width} characters")
    if _INTEGER_SET.isdisjoint(fields):
        return
    for name in INTEGERS:
        value = fields.get(name)
        if value:
            try:
                number = int(value)
            except ValueError:
                raise Malformed(f"{kind}: {name} is not an integer: {value[:40]!r}") from None
            if abs(number) >= 2**62:
                raise Malformed(f"{kind}: {name} out of range")


def _decoded(raw: dict[Any, Any]) -> dict[str, str]:
    try:  # the usual reply: UTF-8 bytes
        return {k.decode(): v.decode() for k, v in raw.items()}
    except (AttributeError, UnicodeDecodeError):
        return {_text(k): _text(v) for k, v in raw.items()}


def decode(stream: str, entry_id: str, raw: dict[Any, Any]) -> Event:
    """The event of one entry; raises Malformed naming what is wrong."""
    fields = _decoded(raw)
    kind, ts = fields.pop("type", ""), fields.pop("ts", "")
    if not kind:
        raise Malformed("no type")
    if not ts:
        raise Malformed(f"{kind[:64]}: no ts")
    ts_ms = _ts_ms(ts)
    wide = len(kind) > WIDTHS["type"] or len(ts) > WIDTHS["ts"]
    _check(kind[:64], fields | {"type": kind, "ts": ts} if wide else fields)
    return Event(stream, entry_id, entry_order(entry_id), kind, ts, ts_ms, fields)


def raw_text(raw: dict[Any, Any]) -> str:
    """A dead letter's raw fields as JSON text (undecodable bytes escaped)."""
    pairs = {
        (k.decode("utf-8", "backslashreplace") if isinstance(k, bytes) else str(k)): (
            v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }
    return msgspec.json.encode(pairs).decode()
