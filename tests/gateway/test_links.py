"""Link benefits (SPEC 3.2): delivered through the supplier pool like a direct recharge, the
supplier's link sealed at rest and shown to the owning client only."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.redemptions.cards import open_link, seal_link
from tests.gateway.conftest import OTHER_KEY, Gateway, supplier_config
from tests.gateway.test_redeem_concurrency import all_events, redis_at_rest, settled
from tests.gateway.test_redemptions import knobs, sim_orders
from tests.gateway.test_supplier_resilience import (
    ADMIN,
    PUBLIC,
    grant_all,
    put_campaign,
    redeem_all,
    served_suppliers,
    sim_call,
    sim_successes,
)
from tests.support.served import scrape_until, serve

LINK = {"kind": "link", "sku": "ebook-1", "suppliers": ["alpha", "beta"]}
SERVES_LINKS = {"link_skus": ["ebook-1"]}


def test_a_sealed_link_opens_for_its_own_redemption_only() -> None:
    from cryptography.exceptions import InvalidTag

    key = b"k" * 32
    stored = seal_link(key, "rdm_1", "https://links.example/x/secret-token")
    assert "secret-token" not in stored
    assert "secret-token" not in base64.b64decode(stored).decode(errors="replace")
    assert open_link(key, "rdm_1", stored) == "https://links.example/x/secret-token"
    with pytest.raises(InvalidTag):
        open_link(key, "rdm_2", stored)


async def test_link_is_delivered_replayed_the_same_and_hidden_from_other_clients(
    redeem_gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = redeem_gateway
    await knobs(gw, "alpha", **SERVES_LINKS)
    campaign = await gw.put_campaign(benefit=LINK)
    code = await gw.grant(campaign)
    first = await gw.redeem(code, key="link-1")  # no account: only a direct recharge needs one
    body = await first.json()
    assert first.status == 200, body
    delivery = body["delivery"]
    assert set(delivery) == {"kind", "supplier", "supplier_ref", "url"}
    assert delivery["kind"] == "link" and delivery["supplier"] == "alpha"
    orders = await sim_orders(gw)
    assert [(o["supplier"], o["link"]) for o in orders] == [("alpha", delivery["url"])]
    assert orders[0]["order_id"] == body["redemption_id"]

    replay = await gw.redeem(code, key="link-1")
    assert replay.status == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert (await replay.json())["delivery"] == delivery
    path = f"/v1/redemptions/{body['redemption_id']}"
    read = await gw.public.get(path, headers={"Authorization": "Bearer test-key"})
    assert (await read.json())["delivery"] == delivery
    foreign = await gw.public.get(path, headers={"Authorization": f"Bearer {OTHER_KEY}"})
    assert foreign.status == 404
    assert (await foreign.json())["error"]["code"] == "redemption_not_found"
    assert delivery["url"] not in await foreign.text()

    logged = caplog.text + "\n".join(repr(r.args) + repr(r.__dict__) for r in caplog.records)
    assert caplog.records
    assert delivery["url"] not in logged
    assert delivery["url"].encode() not in await redis_at_rest(gw.redis)


async def test_a_link_campaign_needs_suppliers(redeem_gateway: Gateway) -> None:
    body = {**LINK, "suppliers": []}
    response = await redeem_gateway.admin_call(
        "PUT",
        "/admin/campaigns/no-suppliers",
        {
            "name": "x",
            "starts_at": "2020-01-01T00:00:00Z",
            "ends_at": "2099-01-01T00:00:00Z",
            "benefit": body,
        },
    )
    assert response.status == 400
    assert "link benefit needs at least one supplier" in await response.text()


async def test_link_commit_then_timeout_delivers_each_once_and_the_link_leaks_nowhere(
    tmp_path: Path, valkey_url: str, redis_client: Any, simulator: str
) -> None:
    # alpha creates the order (and its link), then sleeps past the gateway's timeout: an
    # unknown outcome the gateway must resolve by asking alpha, never by trying beta.
    for supplier in ("alpha", "beta"):
        await sim_call(simulator, "PUT", f"/_sim/suppliers/{supplier}", SERVES_LINKS)
    await sim_call(
        simulator,
        "PUT",
        "/_sim/suppliers/alpha",
        {"timeout_rate": 1.0, "commit_before_timeout": True, "timeout_s": 3.0},
    )
    extra = served_suppliers(simulator, timeout_s=0.8, sweep_after_s=4.0)
    with serve(tmp_path, valkey_url, workers=2, extra=extra) as served:
        await put_campaign(served.admin, "links", 20, LINK)
        vouchers = await grant_all(served.public, "links", [f"u{i}" for i in range(20)])
        results = await redeem_all(served.public, vouchers, account=None)
        assert {status for status, _ in results} <= {200, 202}, results
        assert await settled(served.public, results) == ["delivered"] * 20
        rids = {body["redemption_id"] for _, body in results}
        assert await sim_successes(simulator) == dict.fromkeys(rids, 1)
        orders = await sim_call(simulator, "GET", "/_sim/orders")
        assert {o["supplier"] for o in orders} == {"alpha"} and len(orders) == 20
        links = {o["order_id"]: o["link"] for o in orders}
        async with aiohttp.ClientSession() as session:
            for rid in rids:
                async with session.get(
                    f"{served.public}/v1/redemptions/{rid}", headers=PUBLIC
                ) as response:
                    delivery = (await response.json())["delivery"]
                assert delivery == {
                    "kind": "link",
                    "supplier": "alpha",
                    "supplier_ref": delivery["supplier_ref"],
                    "url": links[rid],
                }
            async with session.get(
                f"{served.admin}/admin/campaigns/links/stats", headers=ADMIN
            ) as response:
                assert (await response.json())["redeemed"] == 20
            sample = 'gateway_redemptions_total{result="delivered"} 20.0'
            metrics_text = await scrape_until(session, f"{served.public}/metrics", sample)
        assert sample in metrics_text
        log_text = served.log()
    streams = await all_events(redis_client)
    at_rest = await redis_at_rest(redis_client)
    assert streams.count("redemption.delivered") == 20
    for link in links.values():
        assert link not in log_text
        assert link not in metrics_text
        assert link not in streams
        assert link.encode() not in at_rest


def test_supplier_answers_keep_the_link_out_of_their_reprs() -> None:
    from supplier_pool.client import OrderResult
    from supplier_pool.pool import Delivered

    url = "https://links.example/alpha/bearer-token"
    assert "bearer-token" not in repr(OrderResult("rdm_1", "success", "ref-1", url))
    assert "bearer-token" not in repr(Delivered("alpha", "ref-1", url))
    assert Delivered("alpha", "ref-1", url).link == url


async def test_a_link_campaign_needs_a_data_key_to_seal_its_links(
    gateway_factory: Any, simulator: str
) -> None:
    without_key = supplier_config(simulator).split("[security]")[0]
    async with gateway_factory(without_key) as gw:
        response = await gw.admin_call(
            "PUT",
            "/admin/campaigns/links-unsealed",
            {
                "name": "x",
                "starts_at": "2020-01-01T00:00:00Z",
                "ends_at": "2099-01-01T00:00:00Z",
                "benefit": LINK,
            },
        )
        assert response.status == 503
        assert "no data key" in await response.text()
