"""A campaign's period budgets as the claim function reads them, and its local calendar days.

Lua cannot read IANA zones, so a PUT that sets a daily field stores with the campaign its
zone's UTC offsets over the campaign's life, and the claim function finds the local day and
the next local midnight from them and its clock (`lua/claim.lua`, docs/budgets.md). The
campaign's `periods` field packs what the function needs, comma separated:

    daily_stock, rollover, per_user_daily_limit, budget, unit_cost, first_day, zone...

`0` for an unset daily_stock or per_user_daily_limit, `-1` for an unset budget; `first_day`
is the local day (days since 1970-01-01 in the zone) of `starts_at`; the zone is
`o0,t1,o1,t2,o2,...`: offset o_k (ms east of UTC) holds from instant t_k (UTC ms) until
t_(k+1), from a day before the start to a day after the end. A campaign without any of the
fields has no `periods` field, and its claims pay for nothing of this.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

DAY_MS = 86_400_000
STEP = timedelta(hours=6)  # zone offsets are sampled this often; a transition is bisected
MARGIN = timedelta(days=1)
# The table is computed at each PUT (and read by every claim): a campaign with a daily field
# may last this long at most.
LONGEST = timedelta(days=20 * 366)


@functools.cache
def _known() -> frozenset[str]:
    # The system's zone directory also holds the host's own zone under these names.
    return frozenset(available_timezones()) - {"localtime", "posixrules"}


def zone(name: str) -> ZoneInfo:
    """The IANA zone; ValueError naming the field for a name that is not one."""
    if name not in _known():
        raise ValueError(f"timezone: unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"timezone: unknown time zone {name!r}") from None


def _offset_ms(tz: ZoneInfo, at: datetime) -> int:
    offset = at.astimezone(tz).utcoffset()
    assert offset is not None
    return int(offset.total_seconds() * 1000)


def offsets(tz: ZoneInfo, start: datetime, end: datetime) -> list[int]:
    """`[o0, t1, o1, ...]`: the zone's offsets (ms) and their transitions (UTC ms) over
    `start` - 1 day .. `end` + 1 day. Offsets are sampled every STEP and each change
    bisected to the second, so transitions at least STEP apart are all found."""
    at, stop = start.astimezone(UTC) - MARGIN, end.astimezone(UTC) + MARGIN
    found = [_offset_ms(tz, at)]
    while at < stop:
        later = min(at + STEP, stop)
        after = _offset_ms(tz, later)
        if after != found[-1]:
            # offset(low) is the old one, offset(high) the new: bisect to the second
            low, high = int(at.timestamp()), int(later.timestamp())
            while high - low > 1:
                middle = (low + high) // 2
                if _offset_ms(tz, datetime.fromtimestamp(middle, UTC)) == found[-1]:
                    low = middle
                else:
                    high = middle
            found += [high * 1000, after]
        at = later
    return found


def local_day(tz: ZoneInfo, now_ms: int) -> int:
    """The local calendar day of an instant: days since 1970-01-01 in the zone."""
    local = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(tz)
    return (local.date() - datetime(1970, 1, 1).date()).days


def periods_field(
    *,
    daily_stock: int | None,
    daily_rollover: bool,
    per_user_daily_limit: int | None,
    budget: int | None,
    unit_cost: int | None,
    timezone: str,
    starts_at: datetime,
    ends_at: datetime,
) -> str | None:
    """The `periods` field for these settings, or None when none of them is set."""
    if daily_stock is None and per_user_daily_limit is None and budget is None:
        return None
    tz = zone(timezone)
    daily = daily_stock is not None or per_user_daily_limit is not None
    if daily and not datetime(1900, 1, 1, tzinfo=UTC) <= starts_at <= ends_at < datetime(
        9000, 1, 1, tzinfo=UTC
    ):
        raise ValueError("starts_at: a campaign with a daily field runs between 1900 and 9000")
    if daily and ends_at - starts_at > LONGEST:
        raise ValueError("ends_at: a campaign with a daily field may last at most 20 years")
    table = offsets(tz, starts_at, ends_at) if daily else [0]
    first_day = local_day(tz, int(starts_at.timestamp() * 1000)) if daily else 0
    head = [
        daily_stock or 0,
        1 if daily_rollover else 0,
        per_user_daily_limit or 0,
        -1 if budget is None else budget,
        unit_cost or 0,
        first_day,
    ]
    return ",".join(str(n) for n in head + table)
