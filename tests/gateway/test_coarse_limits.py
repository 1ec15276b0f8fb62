"""Claim limits above 128 hits (SPEC §6: any limit up to 1,000,000,000): their log is a coarse
window (ratelimit/coarse_window.lua) inside the claim function. A client's 1,000,000 per hour
starts and stays under 1 KB of Valkey after 100,000 hits; a coarse limit refuses with 429 once
its window holds the limit, and gives its hit back when a later limit refuses."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from gateway.app import SERVICES
from gateway.claims.layout import ClaimArgs, Head, claim_keys
from gateway.records import Outcome
from gateway.timefmt import rfc3339_ms
from gateway.valkey import keys
from ratelimit.rules import Limit
from tests.gateway.conftest import Gateway
from tests.gateway.test_limits import assert_rate_limited, limit_keys

_claims = itertools.count()
MILLION_PER_HOUR = '[limits]\nclaim = [{by = "client", limit = 1000000, window_s = 3600}]\n'


def tail(entries: list[bytes]) -> tuple[int, int]:
    """The coarse log's last entry: hits in the newest group, and its expiry step."""
    count, step = entries[-1].decode().split(":")[:2]
    return int(count), int(step)


async def claim_call(
    gw: Gateway, campaign: str, log: str, users: list[str], now_ms: int
) -> list[int]:
    """One call of the claim function for the client `app`, a claim per user (each its own
    Idempotency-Key), as the worker's batcher sends the claims of a loop turn: the outcomes."""
    tag = keys.shard_tag(campaign)
    head_keys = [keys.campaign(tag, campaign), keys.rejections(tag, campaign), keys.events(tag)]
    claim_keys_: list[Any] = []
    claim_args: list[Any] = []
    for user in users:
        n = next(_claims)
        claim_keys_ += claim_keys(keys.voucher(tag, f"{tag}V{n:012d}"), [log], [], [], [])
        claim_args += ClaimArgs(
            f"fp{n}", f"c{n}", "V…", user, "dev", "10.0.0.1", f"r{n}",
            keys.allowance_field("u", user), keys.allowance_field("d", "dev"),
        )  # fmt: skip
    head = Head(now_ms, rfc3339_ms(now_ms), campaign, "app", 0, 0, 0)
    replies = await gw.public.app[SERVICES].scripts.claim(
        keys=[*head_keys, *claim_keys_], args=[*head, *claim_args]
    )
    return [int(outcome) for outcome in replies[::4]]


async def claim_hits(gw: Gateway, campaign: str, log: str, hits: int, per_call: int = 16) -> None:
    """`hits` grants to distinct users, `per_call` claims per call, 10 calls at a time (well
    inside the worker's Valkey timeout on a loaded machine)."""
    now_ms = int(time.time() * 1000)

    async def call(first: int, last: int) -> None:
        users = [f"u{n}" for n in range(first, last)]
        assert set(await claim_call(gw, campaign, log, users, now_ms + first)) == {Outcome.OK}

    for start in range(0, hits, per_call * 10):
        firsts = range(start, min(start + per_call * 10, hits), per_call)
        await asyncio.gather(*(call(first, min(first + per_call, hits)) for first in firsts))


async def test_a_million_per_hour_by_client_starts_and_keeps_a_coarse_log(
    gateway_factory: Any,
) -> None:
    async with gateway_factory(MILLION_PER_HOUR) as gw:
        campaign = await gw.put_campaign(stock=10, per_user_limit=10)
        for _ in range(3):
            assert (await gw.claim(campaign)).status == 201
        [log] = await limit_keys(gw, "client")
        group = Limit(by="client", limit=1_000_000, window_s=3600).group
        assert log.decode().endswith(f":rl:claim:client:3600g{group}:app")
        entries = await gw.redis.lrange(log, 0, -1)
        assert len(entries) == 2 and tail(entries)[0] == 3  # one group start, three hits


async def test_a_hundred_thousand_hits_on_a_million_per_hour_cost_under_1_kb(
    gateway_factory: Any,
) -> None:
    async with gateway_factory(MILLION_PER_HOUR) as gw:
        campaign = await gw.put_campaign(stock=100_000, per_user_limit=1)
        assert (await gw.claim(campaign)).status == 201
        [log] = await limit_keys(gw, "client")
        await claim_hits(gw, campaign, log.decode(), 99_999)
        group = 1_000_000 // 64
        entries = await gw.redis.lrange(log, 0, -1)
        assert len(entries) - 1 == 100_000 // group + 1  # 6 full groups and the newest
        assert tail(entries)[0] == 100_000 % group
        assert (await gw.stats(campaign))["granted"] == 100_000
        assert await gw.redis.memory_usage(log) < 1024


async def test_a_coarse_limit_admits_the_limit_then_answers_429(gateway_factory: Any) -> None:
    limit = 200  # above 128: groups of 3 hits
    config = f'[limits]\nclaim = [{{by = "client", limit = {limit}, window_s = 60}}]\n'
    async with gateway_factory(config) as gw:
        campaign = await gw.put_campaign(stock=1000, per_user_limit=1)
        answers = []
        for _wave in range(0, limit + 20, 40):  # concurrent claims, 40 at a time
            answers += await asyncio.gather(*(gw.claim(campaign) for _ in range(40)))
        statuses = [a.status for a in answers]
        assert statuses.count(201) == limit  # the whole window: exactly the limit
        refused = [a for a in answers if a.status != 201]
        assert len(refused) == len(answers) - limit
        for response in refused:
            await assert_rate_limited(response, limit=limit)
        assert (await gw.stats(campaign))["granted"] == limit


async def test_a_later_limit_refusing_takes_the_hit_back_out_of_the_coarse_log(
    gateway_factory: Any,
) -> None:
    config = (
        '[limits]\nclaim = [{by = "client", limit = 1000, window_s = 60}, '
        '{by = "user", limit = 1, window_s = 60}]\n'
    )
    async with gateway_factory(config) as gw:
        campaign = await gw.put_campaign(stock=100, per_user_limit=100)
        assert (await gw.claim(campaign, user_id="kim")).status == 201
        await assert_rate_limited(await gw.claim(campaign, user_id="kim"), limit=1)
        [log] = await limit_keys(gw, "client")
        assert tail(await gw.redis.lrange(log, 0, -1))[0] == 1  # the refused claim: no hit
        assert (await gw.claim(campaign, user_id="lee")).status == 201
        assert tail(await gw.redis.lrange(log, 0, -1))[0] == 2


async def test_one_call_of_claims_fills_the_coarse_log_to_its_limit_and_no_further(
    gateway_factory: Any,
) -> None:
    """Claims decided in one call share what the call read of the coarse log: the call that
    reaches the limit admits exactly up to it, and a later limit's refusals inside the call
    take their hits back out."""
    config = (
        '[limits]\nclaim = [{by = "client", limit = 200, window_s = 60}, '
        '{by = "user", limit = 1, window_s = 60}]\n'
    )
    async with gateway_factory(config) as gw:
        campaign = await gw.put_campaign(stock=1000, per_user_limit=10)
        assert (await gw.claim(campaign)).status == 201
        [log] = await limit_keys(gw, "client")
        await claim_hits(gw, campaign, log.decode(), 191)  # 192 hits: 64 full groups of 3
        now_ms = int(time.time() * 1000) + 500
        users = ["kim", "kim", "lee", "lee", "max", "ned", "oz", "pam", "quin", "ray", "sue"]
        outcomes = await claim_call(gw, campaign, log.decode(), users, now_ms)
        limited = Outcome.RATE_LIMITED
        # kim and lee twice: the user limit refuses the second, which leaves no client hit.
        assert outcomes == [0, limited, 0, limited, 0, 0, 0, 0, 0, 0, limited]
        entries = await gw.redis.lrange(log, 0, -1)
        assert len(entries) - 1 == 67 and tail(entries)[0] == 2  # 66 * 3 + 2 = 200 hits
        assert (await gw.stats(campaign))["granted"] == 200
