"""Fixtures for the tests on a local 3-master Valkey cluster: the cluster itself, and the
gateway fixtures of tests/gateway put on it (same names, so tests written for one Valkey run
here unchanged)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from tests.gateway.conftest import Gateway, start_gateway
from tests.support.cluster import LocalCluster, start_cluster, stop_cluster

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def valkey_cluster() -> Iterator[LocalCluster]:
    """A 3-master Valkey cluster on loopback for one test module."""
    cluster = start_cluster(Path(tempfile.mkdtemp(prefix="gw-test-cluster-")))
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture
def cluster_url(valkey_cluster: LocalCluster) -> str:
    """The redis+cluster:// URL of the module's cluster, every primary flushed first."""
    valkey_cluster.flushall()
    return valkey_cluster.url


@pytest.fixture
async def redis_client(valkey_cluster: LocalCluster, cluster_url: str) -> AsyncIterator[Any]:
    """A cluster client on freshly flushed primaries (replaces the single-node one)."""
    client = RedisCluster(host="127.0.0.1", port=valkey_cluster.nodes[0].port)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def gateway(cluster_url: str, redis_client: Any) -> AsyncIterator[Gateway]:
    """The gateway apps on the cluster, default config."""
    async for gw in start_gateway(cluster_url):
        gw.redis = redis_client
        yield gw


@pytest.fixture
def gateway_factory(cluster_url: str, redis_client: Any) -> Any:
    """A gateway on the cluster with extra TOML appended to the base config."""

    @contextlib.asynccontextmanager
    async def factory(extra_config: str = "") -> AsyncIterator[Gateway]:
        async for gw in start_gateway(cluster_url, extra_config):
            gw.redis = redis_client
            yield gw

    return factory
