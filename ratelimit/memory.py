"""Pure-Python twin of `sliding_window.lua`, the oracle the property tests compare it with.

Same log, same trimming, same answers. Key expiry is left out: Redis expires a key only after
its newest hit has left the window, when a peek would have trimmed it all anyway.
"""

from __future__ import annotations

from collections import deque


class SlidingWindowLog:
    """One ordered log of admitted-hit times (ms) per key, as `sw_peek`/`sw_record` keep it."""

    def __init__(self) -> None:
        self._logs: dict[str, deque[int]] = {}

    def peek(self, key: str, limit: int, window_ms: int, now_ms: int) -> tuple[int, int]:
        """Trim hits at or before now_ms - window_ms; return (count, retry_after_ms) as sw_peek."""
        log = self._logs.get(key)
        if log is None:
            return 0, 0
        while log and log[0] <= now_ms - window_ms:
            log.popleft()
        if not log:
            del self._logs[key]  # Redis drops an emptied list
            return 0, 0
        count = len(log)
        if count < limit:
            return count, 0
        return count, log[count - limit] + window_ms - now_ms

    def record(self, key: str, window_ms: int, now_ms: int) -> None:
        """Append one hit at max(now_ms, newest hit), like sw_record (window_ms feeds only TTL)."""
        log = self._logs.setdefault(key, deque())
        log.append(max(now_ms, log[-1]) if log else now_ms)
