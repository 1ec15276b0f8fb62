"""Period budgets (SPEC 3.1, 4; docs/budgets.md): daily_stock (with and without rollover),
per_user_daily_limit and budget, over HTTP on the real Valkey, with the claim desk on an
injected clock so tests cross local midnights and daylight-saving changes without sleeping."""

from __future__ import annotations

import asyncio
import collections
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.admin import periods
from gateway.admin.campaigns import campaign_stats
from gateway.app import SERVICES
from gateway.errors import ApiError
from gateway.models import Caller, ClaimRequest
from gateway.valkey import keys
from tests.gateway.conftest import Gateway, campaign_body, claim_desk_on


class Clock:
    """The claim desk's clock, set by the test (seconds since the epoch)."""

    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at.timestamp()


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def on_clock(gw: Gateway, at: datetime) -> Clock:
    """Put the public app's claim desk on a clock the test sets."""
    clock = Clock(at)
    gw.public.server.app[SERVICES].claims = claim_desk_on(gw, clock)
    return clock


async def put(gw: Gateway, **fields: Any) -> str:
    body = {"starts_at": "2027-01-01T00:00:00Z", "ends_at": "2028-01-01T00:00:00Z", "stock": 100}
    return await gw.put_campaign(**{**body, **fields})


Answered = tuple[int, str, str | None, str | None]


async def answer(
    gw: Gateway, campaign: str, user: str | None = None, key: str | None = None
) -> Answered:
    """(status, error code or '', Retry-After or None, Idempotent-Replayed or None)."""
    # A key names one request: the same user and device each time it is sent.
    user = user or (f"user-{key}" if key else None)
    response = await gw.claim(campaign, user_id=user, device_id="dev", key=key)
    body = await response.json()
    code = body["error"]["code"] if response.status >= 400 else ""
    return (
        response.status,
        code,
        response.headers.get("Retry-After"),
        response.headers.get("Idempotent-Replayed"),
    )


def to_next_local_midnight(zone: str, at: datetime) -> int:
    """Seconds from `at` to the first instant of the next local day, found by zoneinfo."""
    tz = ZoneInfo(zone)
    today = at.astimezone(tz).date()
    low, high = int(at.timestamp()), int(at.timestamp()) + 2 * 86400
    while high - low > 1:  # the first second whose local date is past today
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(tz).date() > today:
            high = middle
        else:
            low = middle
    return high - int(at.timestamp())


# -- daily stock ------------------------------------------------------------------------------


async def test_daily_stock_refuses_until_the_local_midnight_and_is_not_stored(
    gateway: Gateway,
) -> None:
    # 22:00 UTC is 23:00 in Berlin in February: the local day ends an hour later.
    clock = on_clock(gateway, utc(2027, 2, 10, 22, 0, 0))
    campaign = await put(gateway, daily_stock=3, timezone="Europe/Berlin")
    assert [(await answer(gateway, campaign))[0] for _ in range(3)] == [201] * 3
    assert await answer(gateway, campaign, key="late") == (
        409,
        "daily_stock_exhausted",
        "3600",
        None,
    )
    clock.set(utc(2027, 2, 10, 22, 59, 59))
    assert await answer(gateway, campaign, key="late") == (409, "daily_stock_exhausted", "1", None)
    clock.set(utc(2027, 2, 10, 23, 0, 0))  # local midnight: a new day, the same key is granted
    assert (await answer(gateway, campaign, key="late"))[0] == 201
    assert await answer(gateway, campaign, key="late") == (201, "", None, "true")
    assert [(await answer(gateway, campaign))[0] for _ in range(3)] == [201, 201, 409]
    stats = await gateway.stats(campaign)
    assert stats["granted"] == 6 and stats["rejected"]["daily_stock_exhausted"] == 3


@pytest.mark.parametrize(
    ("at", "hours"),
    [
        # 2027-03-28 in Berlin has 23 hours: 00:30 CET is 23:30 UTC the day before, and the
        # next midnight (CEST) is 22:00 UTC, 22.5 hours later.
        (utc(2027, 3, 27, 23, 30), 22.5),
        # 2027-10-31 has 25 hours: from 00:30 CEST (22:30 UTC) to midnight CET (23:00 UTC).
        (utc(2027, 10, 30, 22, 30), 24.5),
    ],
)
async def test_daily_stock_across_a_daylight_saving_change(
    gateway: Gateway, at: datetime, hours: float
) -> None:
    clock = on_clock(gateway, at)
    campaign = await put(gateway, daily_stock=2, timezone="Europe/Berlin")
    assert [(await answer(gateway, campaign))[0] for _ in range(2)] == [201, 201]
    seconds = int(hours * 3600)
    assert seconds == to_next_local_midnight("Europe/Berlin", at)
    assert await answer(gateway, campaign) == (409, "daily_stock_exhausted", str(seconds), None)
    clock.set(at + timedelta(seconds=seconds - 1))
    assert await answer(gateway, campaign) == (409, "daily_stock_exhausted", "1", None)
    clock.set(at + timedelta(seconds=seconds))
    assert [(await answer(gateway, campaign))[0] for _ in range(3)] == [201, 201, 409]


@pytest.mark.parametrize(
    ("zone", "instants"),
    [
        # Chile's clocks jump from 24:00 to 01:00: the day after such an evening starts at 01:00.
        ("America/Santiago", [utc(2027, 9, 5, 2, 0), utc(2027, 4, 4, 2, 0)]),
        ("Australia/Lord_Howe", [utc(2027, 4, 3, 12, 0), utc(2027, 10, 2, 12, 0)]),
        ("Asia/Kolkata", [utc(2027, 6, 1, 18, 29, 59), utc(2027, 6, 2, 18, 30)]),
        ("America/New_York", [utc(2027, 3, 14, 3, 0), utc(2027, 11, 7, 4, 30)]),
        ("Pacific/Chatham", [utc(2027, 4, 3, 10, 0), utc(2027, 9, 25, 10, 0)]),
    ],
)
async def test_retry_after_is_the_next_local_midnight_zoneinfo_finds(
    gateway: Gateway, zone: str, instants: list[datetime]
) -> None:
    clock = on_clock(gateway, instants[0])
    campaign = await put(gateway, daily_stock=1, timezone=zone)
    for at in sorted(instants):
        clock.set(at)
        assert (await answer(gateway, campaign))[0] == 201
        expected = str(to_next_local_midnight(zone, at))
        assert await answer(gateway, campaign) == (409, "daily_stock_exhausted", expected, None)


async def test_rollover_carries_unclaimed_daily_stock_forward(gateway: Gateway) -> None:
    clock = on_clock(gateway, utc(2027, 1, 1, 12))
    campaign = await put(gateway, daily_stock=2, daily_rollover=True, stock=5)
    assert (await answer(gateway, campaign))[0] == 201  # day 1: one of two
    clock.set(utc(2027, 1, 2, 9))  # day 2: 2 x 2 - 1 = 3 left
    assert [(await answer(gateway, campaign))[0] for _ in range(4)] == [201, 201, 201, 409]
    clock.set(utc(2027, 1, 5, 9))  # day 5: 10 - 4 = 6, capped by the 1 unit of stock left
    assert [(await answer(gateway, campaign))[1] for _ in range(2)] == ["", "sold_out"]
    stats = await campaign_stats(gateway.redis, campaign, int(clock.now * 1000))
    assert stats is not None and stats["today"] == {"granted": 1, "daily_stock_left": 0}


async def test_without_rollover_unclaimed_stock_is_lost_for_the_day(gateway: Gateway) -> None:
    clock = on_clock(gateway, utc(2027, 1, 1, 12))
    campaign = await put(gateway, daily_stock=2)
    assert (await answer(gateway, campaign))[0] == 201
    clock.set(utc(2027, 1, 2, 12))
    assert [(await answer(gateway, campaign))[0] for _ in range(3)] == [201, 201, 409]


async def fcalls(gw: Gateway) -> int:
    return int((await gw.redis.info("commandstats"))["cmdstat_fcall"]["calls"])


async def test_the_worker_answers_come_back_tomorrow_itself_but_never_past_midnight(
    gateway: Gateway,
) -> None:
    midnight = utc(2027, 2, 10, 23, 0)  # in Berlin
    clock = on_clock(gateway, midnight - timedelta(seconds=0.3))
    campaign = await put(gateway, daily_stock=1, timezone="Europe/Berlin")
    assert (await answer(gateway, campaign))[0] == 201
    assert await answer(gateway, campaign) == (409, "daily_stock_exhausted", "1", None)
    before = await fcalls(gateway)
    clock.set(midnight - timedelta(seconds=0.1))  # the flag is up: no FCALL
    assert await answer(gateway, campaign) == (409, "daily_stock_exhausted", "1", None)
    assert await fcalls(gateway) == before
    clock.set(midnight)  # within the flag's 0.5 s, but a new day: decided in Valkey, granted
    assert (await answer(gateway, campaign))[0] == 201
    assert await fcalls(gateway) == before + 1


# -- per-user daily limit ---------------------------------------------------------------------


async def test_per_user_daily_limit_refuses_until_midnight_and_is_not_stored(
    gateway: Gateway,
) -> None:
    clock = on_clock(gateway, utc(2027, 5, 1, 20, 0))  # 22:00 in Berlin (CEST)
    campaign = await put(
        gateway, per_user_limit=5, per_user_daily_limit=2, timezone="Europe/Berlin"
    )
    assert [(await answer(gateway, campaign, "ann"))[0] for _ in range(2)] == [201, 201]
    assert await answer(gateway, campaign, "ann", key="k3") == (409, "limit_reached", "7200", None)
    assert (await answer(gateway, campaign, "bob"))[0] == 201  # another user has their own
    clock.set(utc(2027, 5, 1, 22, 0))  # local midnight
    assert (await answer(gateway, campaign, "ann", key="k3"))[0] == 201  # not stored: granted
    assert (await answer(gateway, campaign, "ann"))[0] == 201
    # 4 grants: the per-campaign allowance (5) leaves one, then refuses for good (stored).
    clock.set(utc(2027, 5, 2, 22, 0))
    assert (await answer(gateway, campaign, "ann"))[0] == 201
    assert await answer(gateway, campaign, "ann", key="k6") == (409, "limit_reached", None, None)
    clock.set(utc(2027, 5, 3, 22, 0))
    assert await answer(gateway, campaign, "ann", key="k6") == (409, "limit_reached", None, "true")


async def test_a_users_second_claim_in_one_batch_sees_the_first(gateway: Gateway) -> None:
    on_clock(gateway, utc(2027, 5, 1, 12))
    campaign = await put(gateway, per_user_limit=10, per_user_daily_limit=3)
    results = await asyncio.gather(*(answer(gateway, campaign, "cat") for _ in range(8)))
    assert collections.Counter(r[:2] for r in results) == {(201, ""): 3, (409, "limit_reached"): 5}


# -- budget -----------------------------------------------------------------------------------


async def test_budget_refuses_the_grant_that_would_pass_it_and_is_stored(
    gateway: Gateway,
) -> None:
    on_clock(gateway, utc(2027, 6, 1, 12))
    campaign = await put(gateway, unit_cost=250, currency="EUR", budget=1100)
    assert [(await answer(gateway, campaign))[0] for _ in range(4)] == [201] * 4
    assert await answer(gateway, campaign, key="over") == (409, "budget_exhausted", None, None)
    assert await answer(gateway, campaign, key="over") == (409, "budget_exhausted", None, "true")
    records = [k async for k in gateway.redis.scan_iter(match="gw:*:v:*")]
    ttls = [await gateway.redis.pttl(k) for k in records]
    refusals = [t for t in ttls if t <= 86_400_000]
    assert len(refusals) == 1 and refusals[0] > 86_400_000 - 60_000  # kept 24 h
    stats = await gateway.stats(campaign)
    assert (stats["budget_spent"], stats["budget_left"]) == (1000, 100)
    assert stats["granted"] == 4 and stats["stock_left"] == 96


async def test_a_zero_budget_grants_nothing_and_a_free_unit_everything(gateway: Gateway) -> None:
    on_clock(gateway, utc(2027, 6, 1, 12))
    broke = await put(gateway, unit_cost=1, budget=0)
    assert (await answer(gateway, broke))[1] == "budget_exhausted"
    free = await put(gateway, unit_cost=0, budget=0, stock=3)
    assert [(await answer(gateway, free))[1] for _ in range(4)] == ["", "", "", "sold_out"]


async def test_check_order_final_refusals_before_daily_ones(gateway: Gateway) -> None:
    on_clock(gateway, utc(2027, 6, 1, 12))
    # Budget for one, daily stock for one: the budget (final, stored) answers first.
    campaign = await put(gateway, unit_cost=10, budget=10, daily_stock=1, stock=5)
    assert (await answer(gateway, campaign))[0] == 201
    assert (await answer(gateway, campaign))[1] == "budget_exhausted"
    # Sold out before the budget and the day.
    sold = await put(gateway, unit_cost=10, budget=10, daily_stock=1, stock=1)
    assert (await answer(gateway, sold))[0] == 201
    assert (await answer(gateway, sold))[1] == "sold_out"
    # The per-campaign allowance before the day's stock.
    mine = await put(gateway, daily_stock=1, per_user_daily_limit=1)
    assert (await answer(gateway, mine, "dan"))[0] == 201
    assert (await answer(gateway, mine, "dan"))[1] == "limit_reached"
    assert (await answer(gateway, mine, "eve"))[1] == "daily_stock_exhausted"


# -- concurrency ------------------------------------------------------------------------------


async def test_concurrent_claims_never_pass_the_daily_stock_or_the_budget(
    gateway: Gateway,
) -> None:
    clock = on_clock(gateway, utc(2027, 7, 1, 21, 0))
    # A second desk, as a second worker: its batches are FCALLs of their own.
    other = claim_desk_on(gateway, clock)
    daily = await put(gateway, daily_stock=37, stock=1000, timezone="Europe/Berlin")
    costly = await put(gateway, unit_cost=3, budget=100, stock=1000)

    async def flood(campaign: str, n: int) -> collections.Counter[str]:
        async def via_desk(i: int) -> str:
            key = uuid.uuid4().hex
            request = ClaimRequest(user_id=f"u{i}-{key[:6]}", device_id="d")
            try:
                await other.decide(campaign, request, Caller("app", "198.51.100.1", key), key)
            except ApiError as exc:
                return exc.code
            return ""

        async def via_http(i: int) -> str:
            return str((await answer(gateway, campaign))[1])

        jobs = [via_desk(i) if i % 2 else via_http(i) for i in range(n)]
        return collections.Counter(await asyncio.gather(*jobs))

    assert await flood(daily, 120) == {"": 37, "daily_stock_exhausted": 83}
    clock.set(utc(2027, 7, 1, 22, 0))  # midnight in Berlin: a new day's 37
    assert await flood(daily, 120) == {"": 37, "daily_stock_exhausted": 83}
    assert await flood(costly, 120) == {"": 33, "budget_exhausted": 87}
    assert (await gateway.stats(costly))["budget_spent"] == 99
    assert (await gateway.stats(daily))["granted"] == 74


# -- stats and admin --------------------------------------------------------------------------


async def test_stats_show_today_and_the_budget(gateway: Gateway) -> None:
    clock = on_clock(gateway, utc(2027, 3, 27, 22, 30))  # 23:30 CET, before the DST change
    campaign = await put(
        gateway, daily_stock=5, unit_cost=100, budget=1000, timezone="Europe/Berlin"
    )
    for _ in range(3):
        assert (await answer(gateway, campaign))[0] == 201

    async def stats_at(at: datetime) -> dict[str, Any]:
        found = await campaign_stats(gateway.redis, campaign, int(at.timestamp() * 1000))
        assert found is not None
        return found

    before = await stats_at(utc(2027, 3, 27, 22, 59, 59))
    assert before["today"] == {"granted": 3, "daily_stock_left": 2}
    assert (before["budget_spent"], before["budget_left"]) == (300, 700)
    after = await stats_at(utc(2027, 3, 27, 23, 0))  # local midnight
    assert after["today"] == {"granted": 0, "daily_stock_left": 5}
    clock.set(utc(2027, 3, 27, 23, 0))
    assert (await answer(gateway, campaign))[0] == 201
    assert (await stats_at(utc(2027, 3, 27, 23, 1)))["today"]["granted"] == 1
    plain = await gateway.put_campaign()
    assert not {"today", "budget_spent", "budget_left"} & set(await gateway.stats(plain))


async def test_the_admin_document_echoes_the_fields_and_a_put_without_them_drops_them(
    gateway: Gateway,
) -> None:
    fields = {
        "daily_stock": 7,
        "daily_rollover": True,
        "timezone": "Asia/Shanghai",
        "per_user_daily_limit": 2,
        "unit_cost": 5,
        "budget": 500,
    }
    campaign = await put(gateway, **fields)
    document = await (await gateway.admin_call("GET", f"/admin/campaigns/{campaign}")).json()
    assert {name: document[name] for name in fields} == fields
    hash_key = keys.campaign(keys.shard_tag(campaign), campaign)
    assert await gateway.redis.hexists(hash_key, "periods")
    await put(gateway, campaign_id=campaign)
    document = await (await gateway.admin_call("GET", f"/admin/campaigns/{campaign}")).json()
    assert not set(fields) & set(document)
    assert not await gateway.redis.hexists(hash_key, "periods")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "localtime", "daily_stock": 1}, "timezone"),
        ({"budget": 100}, "budget"),
        ({"budget": -1, "unit_cost": 1}, "budget"),
        ({"daily_stock": 0}, "daily_stock"),
        ({"per_user_daily_limit": 0}, "per_user_daily_limit"),
        ({"daily_rollover": True}, "daily_rollover"),
        ({"daily_rollover": "yes", "daily_stock": 1}, "daily_rollover"),
        ({"daily_stock": 1, "ends_at": "2050-01-01T00:00:00Z"}, "ends_at"),
        ({"daily_stock": 1, "starts_at": "0001-01-01T00:00:00Z"}, "starts_at"),
    ],
)
async def test_bad_period_fields_are_400_naming_the_field(
    gateway: Gateway, fields: dict[str, Any], named: str
) -> None:
    campaign = f"bad-{uuid.uuid4().hex[:8]}"
    body = {"starts_at": "2027-01-01T00:00:00Z", "ends_at": "2028-01-01T00:00:00Z", **fields}
    response = await gateway.admin_call(
        "PUT", f"/admin/campaigns/{campaign}", campaign_body(**body)
    )
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_request" and named in error["message"]


def test_the_zone_table_holds_each_transition_to_the_second() -> None:
    tz = periods.zone("Europe/Berlin")
    table = periods.offsets(tz, utc(2027, 1, 1), utc(2028, 1, 1))
    hour = 3_600_000
    march, october = utc(2027, 3, 28, 1), utc(2027, 10, 31, 1)
    assert table == [
        hour,
        int(march.timestamp() * 1000),
        2 * hour,
        int(october.timestamp() * 1000),
        hour,
    ]
    assert periods.offsets(periods.zone("UTC"), utc(2027, 1, 1), utc(2090, 1, 1)) == [0]
