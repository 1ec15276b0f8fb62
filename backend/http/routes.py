"""Thin handlers: check the caller and the parameters, ask a query module, render."""

from __future__ import annotations

import re
import time

import msgspec
from aiohttp import web

from backend import db
from backend.audit import FILTERS, audit
from backend.clawback import Unavailable, request_decoder
from backend.http.envelope import ApiError, error_response, invalid, json_response
from backend.http.render import respond
from backend.http.state import (
    CLAIM_IDS,
    CLAW_BACKS,
    INGEST_HELPERS,
    INGESTER,
    METRICS,
    READER,
    REDIS,
    TOKENS,
)
from backend.reports import campaign_report, overview, suppliers_report
from backend.wallet import BadCursor, wallet
from gateway.codes import normalise_code

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _id(value: str, name: str) -> str:
    if not 1 <= len(value) <= 128 or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise invalid(f"{name}: 1-128 characters, no control characters")
    return value


def _int_param(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise invalid(f"{name}: an integer from 1 to {high}")
    return int(raw)


async def healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    database = await db.ping(request.app[READER])
    try:
        valkey = bool(await request.app[REDIS].ping())
    except Exception:  # any client error means "not reachable"
        valkey = False
    if database and valkey:
        return json_response({"database": True, "valkey": True})
    down = [name for name, ok in (("database", database), ("valkey", valkey)) if not ok]
    return error_response(request, 503, "unavailable", f"unreachable: {', '.join(down)}")


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def reports_overview(request: web.Request) -> web.Response:
    request.app[TOKENS].operator(request)
    return respond(request, await overview(request.app[READER]), "campaigns")


async def reports_campaign(request: web.Request) -> web.Response:
    request.app[TOKENS].operator(request)
    campaign_id = _id(request.match_info["campaign_id"], "campaign_id")
    document = await campaign_report(request.app[READER], campaign_id)
    if document is None:
        raise ApiError(404, "campaign_not_found", "the ledger has no such campaign")
    return respond(request, document, None)


async def reports_suppliers(request: web.Request) -> web.Response:
    request.app[TOKENS].operator(request)
    day = request.query.get("day")
    if day is not None and not _DAY.match(day):
        raise invalid("day: YYYY-MM-DD")
    return respond(request, await suppliers_report(request.app[READER], day), "suppliers")


def _audit_filter(request: web.Request) -> tuple[str, str]:
    given = [name for name in FILTERS if name in request.query]
    if len(given) != 1:
        raise invalid(f"exactly one of {', '.join(FILTERS)}")
    kind = given[0]
    value = _id(request.query[kind], kind)
    if kind == "voucher":
        code = normalise_code(value)
        if code is None:
            raise invalid("voucher: not a voucher code")
        value = code
    return kind, value


async def audit_trail(request: web.Request) -> web.Response:
    request.app[TOKENS].operator(request)
    kind, value = _audit_filter(request)
    limit = _int_param(request, "limit", 1000, 10_000)
    entries = await audit(request.app[READER], request.app[CLAIM_IDS], kind, value, limit)
    return respond(request, {"entries": entries}, "entries")


async def claw_back(request: web.Request) -> web.Response:
    actor, token = request.app[TOKENS].admin(request)
    if request.content_type != "application/json":
        raise invalid("Content-Type: application/json required")
    try:
        req = request_decoder.decode(await request.read())
        req.identity()
    except (msgspec.DecodeError, ValueError) as exc:
        raise invalid(str(exc)) from None
    now_ms = int(time.time() * 1000)
    try:
        outcome = await request.app[CLAW_BACKS].run(req, actor, token, request.remote or "", now_ms)
    except Unavailable as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    return json_response(outcome.document())


async def user_vouchers(request: web.Request) -> web.Response:
    client_id = request.app[TOKENS].client(request)
    user_id = _id(request.match_info["user_id"], "user_id")
    limit = _int_param(request, "limit", 20, 100)
    try:
        document = await wallet(
            request.app[READER],
            client_id,
            user_id,
            limit,
            request.query.get("cursor"),
            int(time.time() * 1000),
        )
    except BadCursor as exc:
        raise invalid(str(exc)) from None
    return json_response(document)


async def ingest_status(request: web.Request) -> web.Response:
    request.app[TOKENS].operator(request)
    ingester, helpers = request.app[INGESTER], request.app[INGEST_HELPERS]
    return json_response(
        {
            "database_ok": ingester.database_ok,
            "streams": sorted(ingester.streams),
            # Ingesting processes up now, the backend's own included (backend.ingest_workers).
            "workers": 1 + (helpers.running() if helpers is not None else 0),
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/reports/overview", reports_overview)
    app.router.add_get("/reports/campaigns/{campaign_id}", reports_campaign)
    app.router.add_get("/reports/suppliers", reports_suppliers)
    app.router.add_get("/audit", audit_trail)
    app.router.add_post("/admin/claw-back", claw_back)
    app.router.add_get("/v1/users/{user_id}/vouchers", user_vouchers)
    app.router.add_get("/ingest", ingest_status)
