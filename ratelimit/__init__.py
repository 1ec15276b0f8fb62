"""Sliding-window rate limits: rules, the Redis Lua library, its Python twin, a local pre-filter.

Algorithm: an exact sliding LOG. Each (route, dimension, window, identity) key is a Redis list
of the admitted hits' timestamps in ms, and a request is admitted iff fewer than `limit` of them
lie inside the window. Rejected requests are not recorded. Bound: in ANY interval of `window_s`
(not just aligned ones, and across a burst that straddles a boundary) at most `limit` requests
are admitted, exactly; `Retry-After` is exact too (the ms until the hit that frees a slot
leaves the window).

Trimming is lazy, because the list's length bounds the in-window count from above: a list
shorter than `limit` admits on one LLEN, untrimmed, and only a full list has its expired hits
dropped (a binary search for the window's first hit, one LTRIM), then counted exactly. Two
ways to use it: check first (sw_peek: LLEN) and record after (sw_record: RPUSH, with a LINDEX
of the newest hit, the clock-step guard, when the list was not empty); or admit in one step
(sw_admit: the RPUSH's answer is the length, the LINDEX reads the hit before it, and an RPOP
takes the hit back out when the list is full or the caller refuses the request for another
reason), one call fewer per limit, with the same answers, log and expiry. A key holds at most
about `limit` hits and still expires as a whole, between one and two eighths of a window after
its newest hit leaves the window: the expiry moves in steps of an eighth of the window, so a
busy key pays one PEXPIRE per step, not one per hit. Callers that need an exact count below
the limit ask for it (`trim_at`): the redeem guard from half a threshold, the standalone
limiter always.

Why not the alternatives:
- Sliding-window counter (two fixed-window counters, the previous one weighted by overlap):
  O(1) memory (two integers per key) and two cheap commands, but approximate. It assumes the
  previous window's hits were spread evenly, so a burst at the end of one window plus a burst
  at the start of the next can admit up to about 2 x limit in one real window, or reject too
  early; retry-after can only be estimated.
- GCRA (one "theoretical arrival time" per key): O(1) memory, one GET/SET, exact for a *rate*
  with a burst allowance, but it enforces smoothness, not "N per window": with burst = N and
  rate N/window a client can take N at once and about N more before the window ends.
- The log costs O(limit) memory per active key (one listpack entry per admitted hit, about
  10 bytes each, so a 1,000-per-minute key holds ~10 KB at most) and, per request, an RPUSH
  and a LINDEX (PEXPIRE once per step), plus O(log limit) LINDEXes and
  one LTRIM each time the list fills up: amortised O(1) Redis work per request. Limits here are
  per-IP/device/user claim and redeem caps (tens to thousands), where exactness during a flash
  sale is worth that; `Limit.limit` is capped at 100,000 to bound a key's size.
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
