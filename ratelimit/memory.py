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


class CoarseWindowLog:
    """Pure-Python twin of `coarse_window.lua`: per key, group start times and the newest
    group's count. Expiry is left out, as in SlidingWindowLog."""

    def __init__(self) -> None:
        self._starts: dict[str, list[int]] = {}
        self._newest_count: dict[str, int] = {}

    def admit(
        self, key: str, limit: int, window_ms: int, now_ms: int, group: int
    ) -> tuple[int, int]:
        """`cw_admit`: (hits counted before this one, retry_after_ms); records when admitted."""
        starts = self._starts.get(key)
        if not starts:
            self._starts[key], self._newest_count[key] = [now_ms], 1
            return 0, 0
        while len(starts) >= 2 and starts[1] <= now_ms - window_ms:
            starts.pop(0)
        c = self._newest_count[key]
        count = (len(starts) - 1) * group + c
        if count >= limit:
            return count, starts[1] + window_ms - now_ms
        if c < group:
            self._newest_count[key] = c + 1
        else:
            starts.append(max(now_ms, starts[-1]))
            self._newest_count[key] = 1
        return count, 0

    def unadmit(self, key: str, group: int) -> None:
        """`cw_unadmit`: take back the hit just admitted."""
        c = self._newest_count[key]
        if c > 1:
            self._newest_count[key] = c - 1
        elif len(self._starts[key]) == 1:
            del self._starts[key], self._newest_count[key]
        else:
            self._starts[key].pop()
            self._newest_count[key] = group

    def state(self, key: str) -> tuple[list[int], int]:
        """(group starts, the newest group's count), as the Valkey list holds them."""
        return list(self._starts.get(key, ())), self._newest_count.get(key, 0)
