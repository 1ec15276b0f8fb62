"""Pure-Python twin of `velocity.lua`, the oracle the property tests compare it with.

Key expiry is left out: Redis expires a key only after its newest member has left the window,
when a peek would have trimmed it all anyway.
"""

from __future__ import annotations


class DistinctWindow:
    """One map member -> last-seen ms per key, as `distinct_peek`/`distinct_record` keep it."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[str, int]] = {}

    def peek(self, key: str, member: str, window_ms: int, now_ms: int) -> tuple[int, int]:
        """Trim members last seen at or before now_ms - window_ms; return (count, is_new)."""
        seen = self._seen.get(key)
        if seen is None:
            return 0, 1
        for gone in [m for m, at in seen.items() if at <= now_ms - window_ms]:
            del seen[gone]
        if not seen:
            del self._seen[key]  # Redis drops an emptied sorted set
            return 0, 1
        return len(seen), 0 if member in seen else 1

    def record(self, key: str, member: str, window_ms: int, now_ms: int) -> None:
        """Set member's last-seen to max(now_ms, its last-seen), like distinct_record."""
        seen = self._seen.setdefault(key, {})
        seen[member] = max(now_ms, seen.get(member, now_ms))
