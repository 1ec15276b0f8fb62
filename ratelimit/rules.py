"""Limits as plain values: what is counted, how many, over which window, and their key suffixes.

Nothing here knows Redis or HTTP. A `Limit` names the identity dimension it counts (`by`), the
most hits it admits (`limit`) and its window (`window_s`). The Redis layer stores one log per
(route, dimension, window, identity); `limit_key` builds that key's suffix, the caller adds its
prefix and hash tag.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Annotated, Any, Final, Literal

import msgspec

Dimension = Literal["ip", "device", "user", "client"]

DIMENSIONS: Final = ("ip", "device", "user", "client")
ROUTES: Final = ("claim", "redeem")
MAX_LIMIT: Final = 1_000_000_000
MAX_WINDOW_S: Final = 30 * 86_400
# Up to this many hits a limit keeps the exact log (one entry per hit); above, the coarse log
# keeps one entry per group of limit // COARSE_GROUPS hits, so its memory stays bounded.
EXACT_MAX_HITS: Final = 128
COARSE_GROUPS: Final = 64
MAX_IDENTITY_CHARS: Final = 128

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc, TAB and DEL included


class LimitsError(ValueError):
    """A limits table is invalid; the message names the key path."""


class Limit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """At most `limit` admitted hits per `by` identity in any window of `window_s` seconds."""

    by: Dimension
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)]
    window_s: Annotated[int, msgspec.Meta(ge=1, le=MAX_WINDOW_S)]

    @property
    def window_ms(self) -> int:
        """The window in milliseconds, the unit the Lua functions take."""
        return self.window_s * 1000

    @property
    def group(self) -> int:
        """Hits per log entry: 1 (the exact log) up to EXACT_MAX_HITS, else limit // 64, so a
        window never admits more than `limit` and never refuses below limit - group."""
        return 1 if self.limit <= EXACT_MAX_HITS else self.limit // COARSE_GROUPS


RouteLimits = dict[str, list[Limit]]


def limit_key(route: str, limit: Limit, identity: str) -> str:
    """Return the key suffix `rl:<route>:<by>:<window_s>:<identity>` for one identity's log,
    `rl:<route>:<by>:<window_s>g<group>:<identity>` for a coarse log (group above 1).

    The identity comes last and every other part is colon-free, so two different
    (route, limit, identity) triples never share a key. Exact limits that differ only in
    `limit` share a log on purpose: changing an amount keeps the history. A coarse log's key
    names its group: its entries are groups of that many hits, which no other layout or group
    size may read.
    """
    if not 1 <= len(identity) <= MAX_IDENTITY_CHARS or _CONTROL.search(identity):
        raise ValueError("identity must be 1-128 characters without control characters")
    return limit_key_prefix(route, limit) + identity


def limit_key_prefix(route: str, limit: Limit) -> str:
    """`limit_key` without the identity: a hot path builds it once and appends identities it
    has already validated."""
    if limit.group > 1:
        return f"rl:{route}:{limit.by}:{limit.window_s}g{limit.group}:"
    return f"rl:{route}:{limit.by}:{limit.window_s}:"


def validate_limits(
    raw: Any, *, path: str = "limits", routes: Collection[str] = ROUTES
) -> RouteLimits:
    """Return the limits table decoded from `raw` (TOML data or Limits), or raise LimitsError.

    Checks: a table of known routes, each a list of valid Limits, no two with the same
    `by` and `window_s` in one route (they would record into one log twice).
    """
    if not isinstance(raw, dict):
        raise LimitsError(f"{path} must be a table of routes")
    table: RouteLimits = {}
    for route, items in raw.items():
        if route not in routes:
            known = ", ".join(routes)
            raise LimitsError(f"{path}.{route}: unknown route '{route}' (known: {known})")
        table[route] = _validate_route(items, f"{path}.{route}")
    return table


def _validate_route(items: Any, path: str) -> list[Limit]:
    if not isinstance(items, list):
        raise LimitsError(f"{path} must be a list of limits")
    limits: list[Limit] = []
    seen: dict[tuple[str, int], int] = {}
    for index, item in enumerate(items):
        limit = _convert(item, f"{path}[{index}]")
        first = seen.setdefault((limit.by, limit.window_s), index)
        if first != index:
            raise LimitsError(
                f"{path}[{index}] repeats by/window_s of {path}[{first}]; keep one of them"
            )
        limits.append(limit)
    return limits


def _convert(item: Any, path: str) -> Limit:
    try:
        return msgspec.convert(item, Limit)
    except msgspec.ValidationError as exc:
        raise LimitsError(_explain(str(exc), path)) from None


_AT = re.compile(r"(?P<msg>.*?)(?: - at `\$(?P<loc>[^`]*)`)?")
_FIELD = re.compile(r"Object (?P<what>missing required|contains unknown) field `(?P<name>[^`]*)`")
_BOUND = re.compile(r"Expected `int` (?P<bound>[<>]= \d+)")


def _explain(message: str, path: str) -> str:
    """Turn a msgspec error into `<key path> <what is wrong>`."""
    found = _AT.fullmatch(message)
    msg, loc = (found["msg"], found["loc"] or "") if found else (message, "")
    if field := _FIELD.fullmatch(msg):
        problem = "is required" if field["what"] == "missing required" else "is not a known key"
        return f"{path}{loc}.{field['name']} {problem}"
    if bound := _BOUND.fullmatch(msg):
        return f"{path}{loc} must be {bound['bound']}"
    if msg.startswith("Invalid enum value"):
        return f"{path}{loc} must be one of {', '.join(DIMENSIONS)}"
    return f"{path}{loc}: {msg}"
