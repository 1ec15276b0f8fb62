"""Sliding-window rate limits: rules, the Redis Lua library, its Python twin, a local pre-filter.

Algorithm: an exact sliding LOG. Each (route, dimension, window, identity) key is a Redis list
of the admitted hits' timestamps in ms, and a request is admitted iff fewer than `limit` of them
lie inside the window. Rejected requests are not recorded. Bound: in ANY interval of `window_s`
(not just aligned ones, and across a burst that straddles a boundary) at most `limit` requests
are admitted, exactly; `Retry-After` is exact too (the ms until the hit that frees a slot
leaves the window).

Trimming is lazy, because the list's length bounds the in-window count from above: a list
shorter than `limit` admits untrimmed, and only a full list has its expired hits dropped (a
binary search, one LTRIM). Two ways to use it: check first (sw_peek) and record after
(sw_record), or admit in one step (sw_admit, an RPOP taking the hit back when refused), with
the same answers, log and expiry. A key expires as a whole one to two eighths of a window after
its newest hit leaves the window: the expiry moves in steps, so a busy key pays one PEXPIRE per
step, not one per hit. Callers that need an exact count below the limit ask for it (`trim_at`).
Memory is O(limit) per active key, so `Limit.limit` is capped (MAX_LIMIT).

Why a log and not a sliding-window counter (up to ~2x over) or GCRA (a rate, not N per
window), and what it costs: docs/ratelimit.md.
"""

from ratelimit.limiter import LimitResult, SlidingWindowLimiter, limiter_source
from ratelimit.memory import SlidingWindowLog
from ratelimit.prefilter import LocalBlocks
from ratelimit.rules import (
    DIMENSIONS,
    ROUTES,
    Limit,
    LimitsError,
    RouteLimits,
    limit_key,
    validate_limits,
)
from ratelimit.scripts import load_lua, sliding_window_source

__all__ = [
    "DIMENSIONS",
    "ROUTES",
    "Limit",
    "LimitResult",
    "LimitsError",
    "LocalBlocks",
    "RouteLimits",
    "SlidingWindowLimiter",
    "SlidingWindowLog",
    "limit_key",
    "limiter_source",
    "load_lua",
    "sliding_window_source",
    "validate_limits",
]
