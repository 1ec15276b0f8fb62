"""create_app: the one place that wires a worker: what it holds and its two applications."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from aiohttp import web

from gateway import codes
from gateway.admin import routes as admin_routes
from gateway.admin.campaigns import CampaignViews
from gateway.claims.desk import ClaimDesk, claim_script_constants
from gateway.http import docs_page, openapi
from gateway.http import routes as public_routes
from gateway.http.auth import ClientIp, Clients
from gateway.http.middlewares import Shedder, envelope
from gateway.http.routes import ClaimRoute, PublicDispatch
from gateway.redemptions.desk import RedeemDesk
from gateway.redemptions.reconciler import Reconciler
from gateway.redemptions.supplier_log import SupplierCallLog
from gateway.settings import Settings, data_key_bytes
from gateway.telemetry import metrics, tally
from gateway.valkey import keys
from gateway.valkey.autopipe import AutoPipeline
from gateway.valkey.calls import UNREACHABLE
from gateway.valkey.connect import connect
from gateway.valkey.durability import Durability
from gateway.valkey.library import Scripts
from risk.lists import RiskListCache
from supplier_pool.breaker import TRANSITIONS
from supplier_pool.pool import OUTCOMES, SupplierPool, SupplierSpec
from supplier_pool.shared_state import BreakerSync

log = logging.getLogger("gateway.app")
LISTS_REFRESH_S = 0.5
METRICS_FLUSH_S = 1.0  # how stale a scrape may see another worker's counts
CALL_LOG_DRAIN_S = 2.0  # how long a closing worker tries to write its last supplier calls


class Services:
    """Built by create_app; started and closed by the public app's cleanup context."""

    def __init__(self, settings: Settings, redis_url: str, data_key: bytes | None = None) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.data_key = data_key
        self.code_key = codes.code_key(data_key)
        self.claim_ids = codes.ClaimIds(data_key)
        self.clients = Clients(settings.clients)
        self.client_ip = ClientIp(settings.server.trusted_proxies)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Connect, load scripts (tolerating Redis being down: /readyz says so) and start tasks."""
        self.redis: Any = connect(self.redis_url, self.settings.redis.timeout_s)
        durability = Durability.of(self.settings.redis)
        self.fast = (
            AutoPipeline(self.redis_url, self.settings.redis.timeout_s, durability)
            if AutoPipeline.supports(self.redis_url)
            else None
        )
        self.scripts = Scripts(
            self.redis, self.fast, {"claim": claim_script_constants(self.settings)}, durability
        )
        await self._load_scripts()
        self.lists = RiskListCache()
        self.claims = ClaimDesk(
            self.redis,
            self.scripts,
            self.settings,
            self.lists.lists,
            self.code_key,
            self.claim_ids,
        )
        self.views = CampaignViews(self.redis)
        specs = [
            SupplierSpec(
                id=s.id,
                base_url=s.base_url,
                timeout_s=s.timeout_s,
                max_concurrency=s.max_concurrency,
                priority=s.priority,
            )
            for s in self.settings.suppliers
        ]
        self.call_log = SupplierCallLog(self.redis, self.settings.redis.stream_max_len)
        self.pool = SupplierPool(specs, observer=self.call_log)
        self.breakers = BreakerSync(
            self.redis,
            self.pool,
            events_key=keys.events(keys.SUPPLIER_TAG),
            stream_max_len=self.settings.redis.stream_max_len,
        )
        self.redemptions = RedeemDesk(
            self.redis,
            self.scripts,
            self.settings,
            self.pool,
            self.data_key,
            self.claim_ids,
            self.lists.lists,
        )
        redemption = self.settings.redemption
        self.reconciler = Reconciler(
            self.redis, self.scripts, self.redemptions.recharge, redemption.reconcile_interval_s
        )
        self._declare_metrics()
        self._spawn(self._refresh_lists())
        self._spawn(self.breakers.run())
        self.call_log.start()
        self._spawn(self.reconciler.run())
        self._spawn(self._flush_metrics())

    def _declare_metrics(self) -> None:
        settings = self.settings
        limits = [(route, lim.by) for route, lims in settings.limits.items() for lim in lims]
        metrics.declare(
            suppliers=self.pool.supplier_ids,
            supplier_outcomes=OUTCOMES,
            breaker_moves=[(old, new) for old, news in TRANSITIONS.items() for new in news],
            limits=[*limits, ("redeem", "failures")],
            rules=[(r.id, r.decision, r.mode) for r in settings.risk_rules],
            version=metrics.build_version(),
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(coro))

    async def _load_scripts(self) -> bool:
        try:
            await self.scripts.load_all()
            # Streams not tied to a campaign, registered for `events tail` and consumers.
            await self.redis.sadd(keys.EVENT_STREAMS, keys.ADMIN_EVENTS)
            await self.redis.sadd(keys.EVENT_STREAMS, keys.events(keys.GUARD_TAG))
            await self.redis.sadd(keys.EVENT_STREAMS, keys.events(keys.SUPPLIER_TAG))
        except UNREACHABLE:
            log.warning("redis unreachable; scripts will load when it answers")
            return False
        return True

    async def _refresh_lists(self) -> None:
        while True:
            try:
                await self.lists.refresh_if_changed(self.redis)
            except UNREACHABLE:
                pass
            except Exception:
                log.exception("risk list refresh failed")
            await asyncio.sleep(LISTS_REFRESH_S)

    async def _flush_metrics(self) -> None:
        try:
            while True:
                await asyncio.sleep(METRICS_FLUSH_S)
                tally.flush()
        finally:
            tally.flush()  # what the last second counted, before the worker goes

    async def ready(self) -> bool:
        """Redis answers and holds every script (loading them if a restart lost them)."""
        try:
            await self.redis.ping()
            return await self.scripts.all_loaded() or await self._load_scripts()
        except UNREACHABLE:
            return False

    async def close(self) -> None:
        # Cancel until done: on Python 3.11 a cancel can be swallowed inside redis-py's
        # asyncio.wait_for (CPython gh-86296), and one lost cancel would hang shutdown.
        for task in self._tasks:
            while not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=0.1)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()
        await self.call_log.close(CALL_LOG_DRAIN_S)
        await self.pool.close()
        if self.fast is not None:
            await self.fast.aclose()
        await self.redis.aclose()


SERVICES = web.AppKey("services", Services)


def create_app(
    settings: Settings, redis_url: str, data_key: bytes | None = None
) -> tuple[web.Application, web.Application]:
    """The public app (claims, redemptions, ops) and the admin app, sharing one Services."""
    if data_key is None and settings.security.data_key:
        data_key = data_key_bytes(settings.security.data_key)
    services = Services(settings, redis_url, data_key)

    async def services_ctx(_app: web.Application) -> AsyncIterator[None]:
        await services.start()
        yield
        await services.close()

    # client_max_size bounds bodies read without a Content-Length (chunked) too.
    shedder = Shedder(settings.server.max_in_flight)
    public = web.Application(
        middlewares=[envelope, shedder.middleware()],
        client_max_size=settings.server.max_body_bytes,
    )
    public[SERVICES] = services
    public[public_routes.WORKER] = services
    public.cleanup_ctx.append(services_ctx)
    claims = ClaimRoute(services)
    public_routes.add_routes(public, claims)
    # aiohttp builds the server's request handler from `app._handle` when the app starts
    # (AppRunner and TestServer alike); the dispatch sends claims past the router and the
    # middleware chain and everything else to the original (pinned by test_claim_dispatch).
    public._handle = PublicDispatch(public._handle, claims, shedder)  # type: ignore[method-assign]
    docs_page.add_docs(public, "Benefits gateway: public API", openapi.PUBLIC_UI_JSON)

    admin_app = web.Application(middlewares=[envelope], client_max_size=4 * 1024 * 1024)
    admin_app[SERVICES] = services
    admin_app[admin_routes.WORKER] = services
    admin_routes.add_routes(admin_app)
    docs_page.add_docs(
        admin_app, "Benefits gateway: admin API", openapi.ADMIN_UI_JSON, openapi.ADMIN_JSON
    )
    return public, admin_app
