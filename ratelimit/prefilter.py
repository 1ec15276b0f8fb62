"""In-process cache of keys known to be over their limit until some time.

When Redis rejects a key with a retry-after, the worker remembers "blocked until" and answers
that key's next requests itself, sparing Redis the flood a scripted client sends. An entry
never outlives the `until` it was given, so the cache can only ever repeat an answer Redis
already gave, never invent a longer one. Time is a parameter (use one monotonic clock).
"""

from __future__ import annotations

import heapq
from typing import Final

DEFAULT_MAX_KEYS: Final = 100_000


class LocalBlocks:
    """A bounded map key -> blocked-until; when full, the soonest-expiring entry goes first."""

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._max_keys = max_keys
        self._until: dict[str, float] = {}
        # Soonest-expiring first. Entries go stale when a key is re-blocked or read out; they
        # are skipped on eviction and swept once the heap outgrows the map twice over.
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._until)

    def block(self, key: str, until: float) -> None:
        """Mark `key` blocked until `until`, replacing any earlier block (Redis's newest answer)."""
        if key not in self._until and len(self._until) >= self._max_keys:
            self._evict_one()
        self._until[key] = until
        heapq.heappush(self._heap, (until, key))
        if len(self._heap) > 2 * self._max_keys:
            self._compact()

    def blocked_for(self, key: str, now: float) -> float:
        """Return the seconds `key` stays blocked after `now`, 0.0 if it is not blocked."""
        until = self._until.get(key)
        if until is None:
            return 0.0
        if until <= now:
            del self._until[key]
            return 0.0
        return until - now

    def _evict_one(self) -> None:
        while self._heap:
            until, key = heapq.heappop(self._heap)
            if self._until.get(key) == until:
                del self._until[key]
                return

    def _compact(self) -> None:
        self._heap = [(until, key) for key, until in self._until.items()]
        heapq.heapify(self._heap)
