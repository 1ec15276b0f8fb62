"""The claim and idempotency tests, and the no-oversell check, on a local 3-master Valkey cluster.

This folder's conftest gives `gateway`, `gateway_factory` and `redis_client` on the cluster
(`redis+cluster://`), so every test of test_claims.py and test_idempotency.py that needs
nothing else is collected here a second time and runs against the cluster unchanged.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
from collections.abc import Callable
from typing import Any

import pytest
from redis.crc import key_slot
from redis.exceptions import MovedError

from gateway.app import SERVICES
from gateway.valkey import keys
from tests.gateway import test_claims, test_idempotency
from tests.gateway.conftest import Gateway
from tests.support.cluster import LocalCluster, kill_node, restart_node

pytestmark = pytest.mark.cluster

CLUSTER_READY_FIXTURES = {"gateway", "gateway_factory", "redis_client"}


def _portable_tests(*modules: Any) -> dict[str, Callable[..., Any]]:
    """Every test function of `modules` whose fixtures this module provides on the cluster."""
    found = {}
    for module in modules:
        for name, test in vars(module).items():
            portable = name.startswith("test_") and inspect.iscoroutinefunction(test)
            if portable and set(inspect.signature(test).parameters) <= CLUSTER_READY_FIXTURES:
                found[name] = test
    return found


# Collected here too: pytest picks up test functions from the module namespace.
globals().update(_portable_tests(test_claims, test_idempotency))


def campaign_ids_one_per_primary(cluster: LocalCluster, prefix: str) -> list[str]:
    """Campaign ids whose keys (by their shard tag) live on each primary in turn."""
    chosen: dict[int, str] = {}
    for i in range(10_000):
        campaign_id = f"{prefix}-{i}"
        slot = key_slot(keys.campaign(keys.shard_tag(campaign_id), campaign_id).encode())
        chosen.setdefault(cluster.node_for_slot(slot).port, campaign_id)
        if len(chosen) == len(cluster.nodes):
            break
    return [chosen[node.port] for node in cluster.nodes]


def stored_on(cluster: LocalCluster, key: str) -> list[int]:
    """The ports of the primaries holding keys in `key`'s slot (each asked about itself)."""
    slot = key_slot(key.encode())
    ports = []
    for node in cluster.nodes:
        with node.client() as client:
            if client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot):
                ports.append(node.port)
    return ports


async def test_gateway_on_cluster_is_ready_with_the_function_library_on_every_primary(
    gateway: Gateway,
    valkey_cluster: LocalCluster,
) -> None:
    response = await gateway.public.get("/readyz")
    assert response.status == 200, await response.text()
    scripts = gateway.public.app[SERVICES].scripts
    for node in valkey_cluster.nodes:
        with node.client() as client:
            (library,) = client.function_list(library=scripts.library)  # RESP2: flat pairs
            functions = dict(zip(library[::2], library[1::2], strict=True))[b"functions"]
            names = {dict(zip(f[::2], f[1::2], strict=True))[b"name"].decode() for f in functions}
            assert names == set(scripts.functions.values()), node.port
    # One primary forgets the library: the gateway is not ready until it loads it again.
    with valkey_cluster.nodes[1].client() as client:
        client.function_flush()
    assert await gateway.public.app[SERVICES].scripts.all_loaded() is False
    response = await gateway.public.get("/readyz")
    assert response.status == 200, await response.text()
    assert await gateway.public.app[SERVICES].scripts.all_loaded() is True


async def test_campaigns_on_three_primaries_each_grant_exactly_their_stock_under_500_claims(
    gateway: Gateway,
    valkey_cluster: LocalCluster,
) -> None:
    campaigns = campaign_ids_one_per_primary(valkey_cluster, "flash")
    for campaign in campaigns:
        await gateway.put_campaign(campaign, stock=50)
    calls = [(c, i) for i in range(500) for c in campaigns]
    responses = await asyncio.gather(
        *(gateway.claim(c, user_id=f"user-{i}", device_id=f"dev-{i}") for c, i in calls)
    )
    outcomes: dict[str, collections.Counter[str]] = {c: collections.Counter() for c in campaigns}
    codes: set[str] = set()
    for (campaign, _i), response in zip(calls, responses, strict=True):
        body = await response.json()
        if response.status == 201:
            outcomes[campaign]["granted"] += 1
            codes.add(body["voucher"]["code"])
        else:
            outcomes[campaign][f"{response.status} {body['error']['code']}"] += 1
    for campaign in campaigns:
        assert outcomes[campaign] == {"granted": 50, "409 sold_out": 450}, (campaign, outcomes)
        stats = await gateway.stats(campaign)
        assert (stats["stock_added"], stats["stock_left"], stats["granted"]) == (50, 0, 50)
    assert len(codes) == 150
    # Each campaign's keys really live on a different primary.
    homes = [stored_on(valkey_cluster, keys.campaign(keys.shard_tag(c), c)) for c in campaigns]
    assert homes == [[node.port] for node in valkey_cluster.nodes]
    for campaign in campaigns:
        entries = await gateway.redis.xrange(keys.events(keys.shard_tag(campaign)))
        granted = [
            f
            for _id, f in entries
            if f[b"type"] == b"claim.granted" and f[b"campaign_id"] == campaign.encode()
        ]
        assert len(granted) == 50


async def test_primaries_that_lost_the_library_reload_it_on_the_next_claim(
    gateway: Gateway,
    valkey_cluster: LocalCluster,
) -> None:
    campaigns = campaign_ids_one_per_primary(valkey_cluster, "noscript")
    for campaign in campaigns:
        await gateway.put_campaign(campaign, stock=5)
    library = gateway.public.app[SERVICES].scripts.library
    for node in valkey_cluster.nodes:
        with node.client() as client:
            client.function_flush()
    for campaign in campaigns:
        response = await gateway.claim(campaign)
        assert response.status == 201, await response.text()
    for node in valkey_cluster.nodes:
        with node.client() as client:
            assert client.function_list(library=library), node.port


async def test_per_user_limit_holds_for_concurrent_claims_on_every_primary(
    gateway: Gateway,
    valkey_cluster: LocalCluster,
) -> None:
    campaigns = campaign_ids_one_per_primary(valkey_cluster, "allowance")
    for campaign in campaigns:
        await gateway.put_campaign(campaign, stock=100, per_user_limit=2)
    responses = await asyncio.gather(
        *(gateway.claim(c, user_id="greedy") for c in campaigns for _ in range(10))
    )
    by_campaign = [responses[i * 10 : (i + 1) * 10] for i in range(len(campaigns))]
    for campaign, batch in zip(campaigns, by_campaign, strict=True):
        assert sorted(r.status for r in batch) == [201] * 2 + [409] * 8, campaign
        codes = {(await r.json())["error"]["code"] for r in batch if r.status == 409}
        assert codes == {"limit_reached"}
        assert (await gateway.stats(campaign))["granted"] == 2


async def test_a_primary_down_fails_its_claims_closed_and_recovers_after_restart(
    gateway: Gateway,
    valkey_cluster: LocalCluster,
) -> None:
    campaigns = campaign_ids_one_per_primary(valkey_cluster, "outage")
    for campaign in campaigns:
        await gateway.put_campaign(campaign, stock=5)
    down = valkey_cluster.nodes[2]
    kill_node(down)
    try:
        statuses = []
        for campaign in campaigns:
            response = await gateway.claim(campaign)
            body = await response.json()
            statuses.append((response.status, body.get("error", {}).get("code", "granted")))
        # Only the campaign whose slot lives on the dead primary fails, and it fails closed.
        assert statuses == [(201, "granted"), (201, "granted"), (503, "unavailable")]
        assert (await gateway.public.get("/readyz")).status == 503
    finally:
        restart_node(valkey_cluster, down)
    # The restarted primary is empty (no persistence here): scripts reload, the campaign is
    # created again, and claims on it are decided.
    await gateway.put_campaign(campaigns[2], stock=5)
    response = await gateway.claim(campaigns[2])
    assert response.status == 201, await response.text()
    assert (await gateway.public.get("/readyz")).status == 200


async def test_blocked_user_is_denied_on_cluster(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=5)
    response = await gateway.admin_call(
        "PUT", "/admin/risk/lists/blocked_users", {"add": ["mallory"]}
    )
    assert response.status == 200
    await asyncio.sleep(1.0)  # admin changes govern claims within 1 s
    response = await gateway.claim(campaign, user_id="mallory")
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "risk_denied"


def test_cluster_fixture_spreads_slots_over_three_primaries(
    valkey_cluster: LocalCluster,
) -> None:
    with valkey_cluster.nodes[0].client() as client:
        slots = sorted((int(s[0]), int(s[1])) for s in client.execute_command("CLUSTER", "SLOTS"))
    assert slots == [(0, 5460), (5461, 10922), (10923, 16383)]
    with pytest.raises(MovedError), valkey_cluster.nodes[1].client() as client:
        client.get("{a}")  # slot 15495: not this primary's
