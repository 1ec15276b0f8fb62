"""Claims in flight together on one campaign are decided by one FCALL (gateway/claim_batch.py):
each is decided as it would be alone, against the real Valkey. The claims of one test are
submitted in one event-loop turn (asyncio.gather on the worker's ClaimDesk), so they share a
batch up to CLAIMS_PER_CALL; FCALLs are counted by INFO commandstats."""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

from gateway.app import SERVICES
from gateway.claims.batcher import CLAIMS_PER_CALL
from gateway.claims.desk import ClaimDesk
from gateway.errors import ApiError
from gateway.models import Caller, ClaimRequest
from gateway.valkey import keys
from tests.gateway.conftest import Gateway
from tests.gateway.test_round_trips import fcall_calls, load_lists


def desk_of(gw: Gateway) -> ClaimDesk:
    desk: ClaimDesk = gw.public.server.app[SERVICES].claims
    return desk


async def decide(
    desk: ClaimDesk, campaign: str, user: str, device: str, ip: str = "198.51.100.1", **kw: Any
) -> tuple[int, str]:
    """(status, voucher code or error code) of one claim through the desk."""
    request = ClaimRequest(user_id=user, device_id=device)
    caller = Caller(kw.get("client", "app"), ip, uuid.uuid4().hex)
    try:
        answer = await desk.decide(campaign, request, caller, kw.get("key", uuid.uuid4().hex))
    except ApiError as error:
        return error.status, error.code
    return answer.status, answer.body.decode()


async def together(gw: Gateway, campaign: str, claims: list[dict[str, Any]]) -> list[Any]:
    """The claims decided in one loop turn, and how many FCALLs that took."""
    desk = desk_of(gw)
    before = await fcall_calls(gw)
    results = await asyncio.gather(*(decide(desk, campaign, **claim) for claim in claims))
    return [list(results), await fcall_calls(gw) - before]


async def test_a_batch_never_oversells_and_takes_one_fcall_per_claims_per_call(
    gateway: Gateway,
) -> None:
    campaign = await gateway.put_campaign(stock=7)
    claims = [{"user": f"u{i}", "device": f"d{i}"} for i in range(40)]
    results, fcalls = await together(gateway, campaign, claims)
    assert fcalls == math.ceil(40 / CLAIMS_PER_CALL)
    statuses = [status for status, _ in results]
    assert statuses.count(201) == 7
    assert {what for status, what in results if status != 201} == {"sold_out"}
    # The first seven in submission order got the stock: claims are decided in turn.
    assert statuses[:7] == [201] * 7
    stats = await gateway.stats(campaign)
    assert (stats["stock_left"], stats["granted"]) == (0, 7)
    assert len({body for status, body in results if status == 201}) == 7
    entries = await gateway.redis.xrange(keys.events(keys.shard_tag(campaign)))
    kinds = [fields[b"type"] for _id, fields in entries]
    assert kinds.count(b"claim.granted") == 7 and kinds.count(b"claim.rejected") == 33


async def test_one_users_claims_in_one_batch_are_held_to_the_allowance(
    gateway: Gateway,
) -> None:
    campaign = await gateway.put_campaign(stock=100, per_user_limit=2, per_device_limit=3)
    claims = [{"user": "scalper", "device": f"d{i}"} for i in range(6)]
    claims += [{"user": f"farm-{i}", "device": "farm-phone"} for i in range(6)]
    results, fcalls = await together(gateway, campaign, claims)
    assert fcalls == 1
    assert [status for status, _ in results[:6]] == [201, 201] + [409] * 4
    assert [status for status, _ in results[6:]] == [201, 201, 201] + [409] * 3
    assert {code for status, code in results if status == 409} == {"limit_reached"}
    assert (await gateway.stats(campaign))["granted"] == 5


async def test_a_batch_from_one_address_is_held_to_the_ip_limit(gateway_factory: Any) -> None:
    config = '[limits]\nclaim = [{ by = "ip", limit = 3, window_s = 60 }]\n'
    async with gateway_factory(config) as gw:
        campaign = await gw.put_campaign(stock=100)
        claims = [{"user": f"u{i}", "device": f"d{i}", "ip": "203.0.113.9"} for i in range(8)]
        claims.append({"user": "elsewhere", "device": "d-x", "ip": "203.0.113.10"})
        results, fcalls = await together(gw, campaign, claims)
        assert fcalls == 1
        assert [status for status, _ in results] == [201] * 3 + [429] * 5 + [201]
        log = keys.campaign_scoped(keys.shard_tag(campaign), campaign, "rl:claim:ip:60:")
        hits = [int(t) for t in await gw.redis.lrange(log + "203.0.113.9", 0, -1)]
        assert len(hits) == 3 and hits == sorted(hits)
        assert await gw.redis.llen(log + "203.0.113.10") == 1


async def test_a_retry_after_its_batch_replays_and_a_batch_of_retries_replays_each(
    gateway: Gateway,
) -> None:
    campaign = await gateway.put_campaign(stock=2)
    claims = [{"user": f"u{i}", "device": f"d{i}", "key": f"key-{i}"} for i in range(4)]
    first, _ = await together(gateway, campaign, claims)
    again, fcalls = await together(gateway, campaign, claims)
    assert fcalls == 1
    assert again == first  # the same vouchers, and the same stored refusals
    assert [status for status, _ in first] == [201, 201, 409, 409]
    assert (await gateway.stats(campaign))["granted"] == 2


async def test_claims_of_other_shapes_or_campaigns_go_in_calls_of_their_own(
    gateway_factory: Any,
) -> None:
    rules = (
        '[[risk.rules]]\nid = "farm"\nkind = "distinct_users_per_device"\nthreshold = 2\n'
        "window_s = 600\n"
    )
    async with gateway_factory(rules) as gw:
        one, other = await gw.put_campaign(stock=10), await gw.put_campaign(stock=10)
        await load_lists(gw)  # "vip" is allow-listed
        desk = desk_of(gw)
        before = await fcall_calls(gw)
        results = await asyncio.gather(
            decide(desk, one, "a", "shared"),
            decide(desk, one, "vip", "shared"),  # allow-listed: no rules, another shape
            decide(desk, one, "b", "shared", client="other"),  # another client
            decide(desk, other, "c", "shared"),
            decide(desk, one, "d", "shared"),
        )
        assert await fcall_calls(gw) - before == 4
        # Batches go out in the order they opened: a and d, vip (no rules), b, c. The device
        # rule counts users per campaign, so b is the third user on `shared` and is denied.
        assert [status for status, _ in results] == [201, 201, 403, 201, 201]
