"""Claims reach their handler past aiohttp's router, and the routed way answers the same."""

from __future__ import annotations

import uuid

from gateway.http.routes import PublicDispatch
from tests.gateway.conftest import API_KEY, Gateway


async def test_the_public_server_handler_is_the_claim_dispatch(gateway: Gateway) -> None:
    # aiohttp builds the server's request handler from `app._handle`; create_app relies on it.
    runner = gateway.public.server.runner
    assert runner is not None and runner.server is not None
    assert isinstance(runner.server.request_handler, PublicDispatch)


async def test_percent_encoded_campaign_id_is_routed_to_the_same_campaign(
    gateway: Gateway,
) -> None:
    campaign = await gateway.put_campaign("flash", stock=2)
    direct = await gateway.claim(campaign, user_id="ann")
    routed = await gateway.public.post(
        "/v1/campaigns/fl%61sh/claims",  # 'a' percent-encoded: only the router decodes it
        json={"user_id": "bob", "device_id": "bob-phone"},
        headers={"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": uuid.uuid4().hex},
    )
    assert (direct.status, routed.status) == (201, 201)
    assert (await routed.json())["campaign_id"] == "flash"
    assert routed.headers["X-Request-Id"]
    assert (await gateway.stats(campaign))["granted"] == 2


async def test_other_methods_and_near_paths_still_get_router_answers(gateway: Gateway) -> None:
    get = await gateway.public.get("/v1/campaigns/flash/claims")
    assert get.status == 405
    assert get.headers["Allow"] == "POST"
    assert (await get.json())["error"]["code"] == "method_not_allowed"
    nested = await gateway.public.post("/v1/campaigns/a/b/claims", json={})
    assert nested.status == 404
    assert (await nested.json())["error"]["code"] == "not_found"
