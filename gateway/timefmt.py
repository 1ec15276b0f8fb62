"""RFC 3339 UTC text for epoch milliseconds, the one time format on the wire."""

from __future__ import annotations

from datetime import UTC, datetime

# A claim formats two instants (now, and the voucher's expiry) that each stay in one second
# for a thousand-odd requests; strftime costs more than everything else here, so the text of
# recent seconds is kept (a bounded table, emptied when full).
_SECONDS_KEPT = 64
_prefixes: dict[int, str] = {}


def rfc3339_ms(ms: int) -> str:
    """`2026-11-23T09:00:00.123Z` for epoch milliseconds."""
    second, millis = divmod(ms, 1000)
    prefix = _prefixes.get(second)
    if prefix is None:
        if len(_prefixes) >= _SECONDS_KEPT:
            _prefixes.clear()
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _prefixes[second] = prefix
    return f"{prefix}{millis:03d}Z"


def rfc3339_s(ms: int) -> str:
    """`2026-11-23T09:00:00Z`: whole seconds, for campaign times."""
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_ms(value: datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    return int(value.timestamp() * 1000)
