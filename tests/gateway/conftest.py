"""In-process gateway apps on the session's real Valkey, plus small request helpers."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import SERVICES, create_app
from gateway.claims.desk import ClaimDesk
from gateway.redemptions.desk import RedeemDesk
from gateway.settings import Settings, parse
from risk.lists import RiskLists

ADMIN_TOKEN = "test-admin-token"
API_KEY = "test-key"
OTHER_KEY = "other-key"

BASE_CONFIG = f"""
[server]
max_body_bytes = 4096
[admin]
token = "{ADMIN_TOKEN}"
[[clients]]
id = "app"
api_key = "{API_KEY}"
[[clients]]
id = "other"
api_key = "{OTHER_KEY}"
"""

_ids = itertools.count()


def campaign_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "test",
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": "2099-01-01T00:00:00Z",
        "stock": 10,
        "per_user_limit": 1,
        "per_device_limit": 0,
        "voucher_ttl_s": 3600,
        "benefit": {"kind": "voucher", "sku": "sku-1"},
    }
    body.update(overrides)
    return body


@dataclass
class Gateway:
    public: TestClient[Any, Any]
    admin: TestClient[Any, Any]
    settings: Settings
    redis: Any
    created: list[str] = field(default_factory=list)

    async def put_campaign(self, campaign_id: str | None = None, **overrides: Any) -> str:
        campaign_id = campaign_id or f"camp-{next(_ids)}"
        response = await self.admin.put(
            f"/admin/campaigns/{campaign_id}",
            json=campaign_body(**overrides),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert response.status in (200, 201), await response.text()
        return campaign_id

    async def admin_call(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.admin.request(
            method, path, json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        return response

    async def grant(self, campaign_id: str, user_id: str = "ruth", device_id: str = "dev") -> str:
        """Claim one voucher for user_id; returns its code."""
        response = await self.claim(campaign_id, user_id=user_id, device_id=device_id)
        assert response.status == 201, await response.text()
        return str((await response.json())["voucher"]["code"])

    async def redeem(
        self,
        code: str,
        user_id: str = "ruth",
        device_id: str = "dev",
        account: str | None = None,
        key: str | None = None,
        api_key: str = API_KEY,
    ) -> Any:
        body: dict[str, Any] = {"voucher_code": code, "user_id": user_id, "device_id": device_id}
        if account is not None:
            body["account"] = account
        return await self.public.post(
            "/v1/redemptions",
            json=body,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Idempotency-Key": key or uuid.uuid4().hex,
            },
        )

    async def stats(self, campaign_id: str) -> dict[str, Any]:
        response = await self.admin_call("GET", f"/admin/campaigns/{campaign_id}/stats")
        assert response.status == 200
        return dict(await response.json())

    async def claim(
        self,
        campaign_id: str,
        user_id: str | None = None,
        device_id: str | None = None,
        key: str | None = None,
        api_key: str = API_KEY,
        headers: dict[str, str] | None = None,
    ) -> Any:
        body = {
            "user_id": user_id or f"user-{uuid.uuid4().hex[:10]}",
            "device_id": device_id or f"dev-{uuid.uuid4().hex[:10]}",
        }
        all_headers = {
            "Authorization": f"Bearer {api_key}",
            "Idempotency-Key": key or uuid.uuid4().hex,
        }
        all_headers.update(headers or {})
        return await self.public.post(
            f"/v1/campaigns/{campaign_id}/claims", json=body, headers=all_headers
        )


async def start_gateway(redis_url: str, extra_config: str = "") -> AsyncIterator[Gateway]:
    settings = parse(BASE_CONFIG + extra_config, env={})
    public_app, admin_app = create_app(settings, redis_url)
    public = TestClient(TestServer(public_app))
    admin = TestClient(TestServer(admin_app))
    await public.start_server()
    await admin.start_server()
    try:
        yield Gateway(public, admin, settings, public_app)
    finally:
        await admin.close()
        await public.close()


@pytest.fixture
async def gateway(valkey_url: str, redis_client: Any) -> AsyncIterator[Gateway]:
    """A gateway (public + admin app) on a flushed Valkey, default config."""
    async for gw in start_gateway(valkey_url):
        gw.redis = redis_client
        yield gw


@pytest.fixture
def gateway_factory(valkey_url: str, redis_client: Any) -> Any:
    """Build a gateway with extra TOML appended to the base config (limits, rules, ...)."""
    import contextlib

    @contextlib.asynccontextmanager
    async def factory(extra_config: str = "") -> AsyncIterator[Gateway]:
        # aclosing: a failing test body still closes the test clients (no unclosed sessions).
        async with contextlib.aclosing(start_gateway(valkey_url, extra_config)) as gateways:
            async for gw in gateways:
                gw.redis = redis_client
                yield gw

    return factory


@pytest.fixture
async def simulator() -> AsyncIterator[str]:
    """The supplier simulator (suppliers alpha and beta) on a loopback port."""
    from supplier_pool.simulator import running_simulator

    async with running_simulator(suppliers=("alpha", "beta"), seed=7) as base:
        yield base


def supplier_config(base: str, timeout_s: float = 1.0) -> str:
    return f"""
[[suppliers]]
id = "alpha"
base_url = "{base}/s/alpha"
timeout_s = {timeout_s}
max_concurrency = 256
priority = 1
[[suppliers]]
id = "beta"
base_url = "{base}/s/beta"
timeout_s = {timeout_s}
max_concurrency = 256
priority = 2
[security]
data_key = "{"B" * 43}="
[redemption]
sweep_after_s = 2.0
reconcile_interval_s = 0.2
"""


@pytest.fixture
async def redeem_gateway(
    valkey_url: str, redis_client: Any, simulator: str
) -> AsyncIterator[Gateway]:
    """A gateway wired to the simulator's two suppliers, with a fast reconciler."""
    async for gw in start_gateway(valkey_url, supplier_config(simulator)):
        gw.redis = redis_client
        gw.simulator = simulator  # type: ignore[attr-defined]
        yield gw


def claim_desk_on(gw: Gateway, clock: Callable[[], float]) -> ClaimDesk:
    """A claim desk of the gateway's app, as another worker would have, on the test's clock."""
    services = gw.public.server.app[SERVICES]
    return ClaimDesk(
        services.redis,
        services.scripts,
        gw.settings,
        RiskLists(),
        services.code_key,
        services.claim_ids,
        clock=clock,
    )


def redeem_desk_on(gw: Gateway, clock: Callable[[], float], pool: Any = None) -> RedeemDesk:
    """A redeem desk of the gateway's app on the test's clock (and supplier pool, if given)."""
    services = gw.public.server.app[SERVICES]
    return RedeemDesk(
        services.redis,
        services.scripts,
        gw.settings,
        services.pool if pool is None else pool,
        services.data_key,
        services.claim_ids,
        clock=clock,
    )
