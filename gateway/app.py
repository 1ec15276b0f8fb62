"""create_app: the one place that wires the public and admin applications."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway.admin import routes as admin
from gateway.http import routes as handlers
from gateway.http.middlewares import Shedder, envelope
from gateway.http.routes import ClaimRoute, PublicDispatch
from gateway.services import SERVICES, Services
from gateway.settings import Settings, data_key_bytes


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
    public.cleanup_ctx.append(services_ctx)
    claims = ClaimRoute(services)
    handlers.add_routes(public, claims)
    # aiohttp builds the server's request handler from `app._handle` when the app starts
    # (AppRunner and TestServer alike); the dispatch sends claims past the router and the
    # middleware chain and everything else to the original (pinned by test_claim_dispatch).
    public._handle = PublicDispatch(public._handle, claims, shedder)  # type: ignore[method-assign]

    admin_app = web.Application(middlewares=[envelope], client_max_size=4 * 1024 * 1024)
    admin_app[SERVICES] = services
    admin.add_routes(admin_app)
    return public, admin_app
