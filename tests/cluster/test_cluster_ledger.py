"""Ingest on a local 3-master Valkey cluster: every call names one stream, so one slot."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from backend import db
from backend.reports import campaign_report
from gateway.valkey import keys
from gateway.valkey.connect import connect
from tests.backend.conftest import ingester
from tests.cluster.test_cluster_gateway import campaign_ids_one_per_primary
from tests.gateway.conftest import Gateway
from tests.support.cluster import LocalCluster

pytestmark = pytest.mark.cluster


async def test_ingest_on_a_cluster_counts_every_primarys_campaign_exactly(
    gateway: Gateway,
    valkey_cluster: LocalCluster,
    tmp_path: Path,
) -> None:
    ids = campaign_ids_one_per_primary(valkey_cluster, "ledger")
    for campaign_id in ids:
        await gateway.put_campaign(campaign_id, stock=30)
        users = [f"u{i % 40}" for i in range(60)]
        await asyncio.gather(*[gateway.claim(campaign_id, user_id=u) for u in users])
    engine = db.create_engine(db.async_url(f"sqlite:///{tmp_path / 'l.db'}", tmp_path))
    await db.migrate(engine)
    redis: Any = connect(valkey_cluster.url, 2.0)
    try:
        await ingester(redis, engine).catch_up()
        for campaign_id in ids:
            report = await campaign_report(engine, campaign_id)
            stats = await gateway.stats(campaign_id)
            assert report is not None
            assert report["funnel"]["granted"] == stats["granted"] == 30
            assert report["rejected"] == stats["rejected"]
            assert await redis.xlen(keys.events(keys.shard_tag(campaign_id))) == 0
    finally:
        await redis.aclose()
        await engine.dispose()
