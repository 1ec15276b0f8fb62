"""Pure-Python twin of `sliding_window.lua`, the oracle the property tests compare it with.

Same log, same lazy trimming, same answers. Key expiry is left out: Redis expires a key only
after its newest hit has left the window. From then on the twin still holds those stale hits,
so a peek below the trim threshold may count them where Redis counts none; both still admit
(both counts are below the limit), and the first trim drops them.
"""

from __future__ import annotations

from collections import deque


class SlidingWindowLog:
    """One ordered log of admitted-hit times (ms) per key, as sliding_window.lua keeps it."""

    def __init__(self) -> None:
        self._logs: dict[str, deque[int]] = {}

    def peek(
        self, key: str, limit: int, window_ms: int, now_ms: int, trim_at: int | None = None
    ) -> tuple[int, int]:
        """Return (count, retry_after_ms) as sw_peek; trim only a log of >= min(trim_at, limit)."""
        log = self._logs.get(key)
        if log is None:
            return 0, 0
        if len(log) < min(limit if trim_at is None else trim_at, limit):
            return len(log), 0
        while log and log[0] <= now_ms - window_ms:
            log.popleft()
        if not log:
            del self._logs[key]  # Redis drops an emptied list
            return 0, 0
        count = len(log)
        if count < limit:
            return count, 0
        return count, log[count - limit] + window_ms - now_ms

    def record(self, key: str, window_ms: int, now_ms: int, count: int | None = None) -> None:
        """Append one hit as sw_record: at now_ms if count is 0, else at max(now_ms, newest).

        `window_ms` feeds only the TTL in Redis; `count` is what peek returned for this key.
        """
        log = self._logs.setdefault(key, deque())
        log.append(max(now_ms, log[-1]) if log and count != 0 else now_ms)

    def admit(self, key: str, limit: int, window_ms: int, now_ms: int) -> tuple[int, int]:
        """`sw_admit`: peek, then record when admitted; the same (count, retry_after_ms)."""
        count, retry_after_ms = self.peek(key, limit, window_ms, now_ms)
        if count < limit:
            self.record(key, window_ms, now_ms, count)
        return count, retry_after_ms

    def hits(self, key: str) -> list[int]:
        """The key's log, oldest first, as `LRANGE key 0 -1` reads it from Redis."""
        return list(self._logs.get(key, ()))
