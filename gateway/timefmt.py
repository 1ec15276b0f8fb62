"""RFC 3339 UTC text for epoch milliseconds, the one time format on the wire."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339_ms(ms: int) -> str:
    """`2026-11-23T09:00:00.123Z` for epoch milliseconds."""
    return (
        datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    )


def rfc3339_s(ms: int) -> str:
    """`2026-11-23T09:00:00Z`: whole seconds, for campaign times."""
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_ms(value: datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    return int(value.timestamp() * 1000)
