"""`fsync` durability on a cluster: redis-py sends each script call and its WAITAOF together,
to the node that holds the call's keys (a wait sent elsewhere would count nothing)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis

from tests.gateway.conftest import start_gateway
from tests.support.cluster import LocalCluster

pytestmark = pytest.mark.cluster


def calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_fsync_on_a_cluster_waits_on_the_node_of_each_call(
    valkey_cluster: LocalCluster, cluster_url: str
) -> None:
    clients = [node.client() for node in valkey_cluster.nodes]
    for client in clients:
        client.config_set("appendonly", "yes")  # WAITAOF needs an AOF to count
    try:
        extra = f'[redis]\nurl = "{cluster_url}"\ndurability = "fsync"\n'
        async with contextlib.aclosing(start_gateway(cluster_url, extra)) as gateways:
            async for gw in gateways:
                for client in clients:
                    client.config_resetstat()
                campaigns = [await gw.put_campaign(f"spread-{i}", stock=20) for i in range(6)]
                answers = await asyncio.gather(
                    *(gw.claim(campaign) for campaign in campaigns for _ in range(5))
                )
                assert [response.status for response in answers] == [201] * 30
        per_node = [(calls(c, "fcall"), calls(c, "waitaof")) for c in clients]
        # 6 campaign writes, then the claims (the batcher may put several in one call)
        assert sum(fcalls for fcalls, _ in per_node) >= 7, per_node
        # one wait per call, each on the node that ran the call
        assert all(fcalls == waits for fcalls, waits in per_node), per_node
        assert sum(1 for fcalls, _ in per_node if fcalls) >= 2  # the calls were spread
    finally:
        for client in clients:
            client.config_set("appendonly", "no")
            client.close()
