"""Public routes, thin: decode -> decide -> encode.

Claims are the flash-sale hot path: `PublicDispatch` hands an HTTP/1.1
`POST /v1/campaigns/{id}/claims` straight to its handler inside the same envelope and load
shedding, skipping aiohttp's router and middleware chain, and the answer is written as one
buffer (`gateway.wire`), skipping aiohttp's Response machinery: together a measurable share of a
claim's CPU. Every other request, and a claim path needing percent-decoding, takes the routed
way and gets aiohttp's own responses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from gateway.admin.campaigns import CampaignViews
from gateway.claims.desk import ClaimDesk
from gateway.errors import business
from gateway.http.auth import ClientIp, Clients
from gateway.http.intake import (
    checked_id,
    decode,
    idempotency_key,
    json_response,
    path_id,
    read_body,
    require_json,
)
from gateway.http.middlewares import REQUEST_ID, Shedder, enveloped
from gateway.http.openapi import OPENAPI_JSON
from gateway.http.wire import Answer
from gateway.models import Caller, claim_decoder, redeem_decoder
from gateway.redemptions.desk import RedeemDesk
from gateway.settings import Settings
from gateway.telemetry import metrics
from gateway.valkey import streams
from gateway.valkey.calls import UNREACHABLE


class Worker(Protocol):
    """What the public routes use of the worker's services (gateway.app.Services)."""

    settings: Settings
    clients: Clients
    client_ip: ClientIp
    claims: ClaimDesk
    redemptions: RedeemDesk
    views: CampaignViews
    redis: Any

    async def ready(self) -> bool: ...


WORKER = web.AppKey("public_worker", Worker)


async def _intake(request: web.Request, services: Worker) -> tuple[Caller, bytes]:
    """Auth, content type, body and signature: what every POST of the public API shares."""
    client = services.clients.authenticate(request)
    require_json(request)
    server = services.settings.server
    body = await read_body(request, server.max_body_bytes, server.body_timeout_s)
    nonce = services.clients.check_signature(client, request, body)
    caller = Caller(
        client.id,
        services.client_ip(request),
        request[REQUEST_ID],
        nonce,
        request.headers.get("X-Challenge-Pass"),
    )
    return caller, body


CLAIM_ROUTE = "/v1/campaigns/{campaign_id}/claims"
CLAIM_PREFIX, CLAIM_SUFFIX = "/v1/campaigns/", "/claims"
CAMPAIGN_ID = web.RequestKey("campaign_id", str)


class ClaimRoute:
    """POST /v1/campaigns/{campaign_id}/claims: intake, one decision, the answer."""

    def __init__(self, services: Worker) -> None:
        self._services = services

    async def __call__(self, request: web.Request) -> Answer:
        """The decision's answer, written to the wire as it is (HTTP/1.1, `PublicDispatch`)."""
        services = self._services
        campaign_id = checked_id(request[CAMPAIGN_ID], "campaign_id")
        caller, body = await _intake(request, services)
        key = idempotency_key(request)
        claim_request = decode(claim_decoder, body)
        return await services.claims.decide(campaign_id, claim_request, caller, key)

    async def routed(self, request: web.Request) -> web.Response:
        """The same route reached through the router (ids that needed percent-decoding)."""
        request[CAMPAIGN_ID] = request.match_info["campaign_id"]
        return _respond(await self(request))


class PublicDispatch:
    """The public server's request handler: claims direct, everything else routed."""

    def __init__(
        self,
        routed: Callable[[web.Request], Awaitable[web.StreamResponse]],
        claims: ClaimRoute,
        shedder: Shedder,
    ) -> None:
        self._routed = routed
        self._claims = claims
        self._shedder = shedder

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        # `Expect: 100-continue` is answered by the router's expect handler: routed.
        if (
            request.method == "POST"
            and request.version == HttpVersion11
            and hdrs.EXPECT not in request.headers
        ):
            path = request.raw_path
            if path.startswith(CLAIM_PREFIX) and path.endswith(CLAIM_SUFFIX):
                campaign_id = path[len(CLAIM_PREFIX) : -len(CLAIM_SUFFIX)]
                if campaign_id and not (
                    "/" in campaign_id or "%" in campaign_id or "?" in campaign_id
                ):
                    request[CAMPAIGN_ID] = campaign_id
                    # An Answer, not a web.StreamResponse: aiohttp only awaits its prepare()
                    # and write_eof() and reads keep_alive (gateway/wire.py).
                    return await enveloped(  # type: ignore[return-value]
                        request, self._claims, CLAIM_ROUTE, self._shedder, wire=True
                    )
        return await self._routed(request)


def _respond(answer: Answer) -> web.Response:
    return web.Response(
        status=answer.status,
        body=answer.body,
        content_type="application/json",
        headers=answer.headers,
    )


async def redeem(request: web.Request) -> web.Response:
    services = request.app[WORKER]
    caller, body = await _intake(request, services)
    key = idempotency_key(request)
    redeem_request = decode(redeem_decoder, body)
    return _respond(await services.redemptions.redeem(redeem_request, caller, key))


async def get_redemption(request: web.Request) -> web.Response:
    services = request.app[WORKER]
    client = services.clients.authenticate(request)
    redemption_id = path_id(request, "redemption_id")
    return _respond(await services.redemptions.get(redemption_id, client.id))


async def get_campaign(request: web.Request) -> web.Response:
    services = request.app[WORKER]
    services.clients.authenticate(request)
    view = await services.views.get(path_id(request, "campaign_id"))
    if view is None:
        raise business("campaign_not_found")
    return json_response(view)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[WORKER]
    if await services.ready():
        return json_response({"status": "ready"})
    return json_response({"status": "not_ready", "redis": "unreachable or scripts missing"}, 503)


async def metrics_text(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(1.0):
            trimmed: int | None = await streams.trimmed_unread(request.app[WORKER].redis)
    except (TimeoutError, *UNREACHABLE):
        trimmed = None  # the scrape still answers, without the Valkey-derived families
    body, content_type = metrics.render(trimmed)
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI_JSON, content_type="application/json")


def add_routes(app: web.Application, claims: ClaimRoute) -> None:
    app.router.add_post(CLAIM_ROUTE, claims.routed)
    app.router.add_get("/v1/campaigns/{campaign_id}", get_campaign)
    app.router.add_post("/v1/redemptions", redeem)
    app.router.add_get("/v1/redemptions/{redemption_id}", get_redemption)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_get("/openapi.json", openapi)
