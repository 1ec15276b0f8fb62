"""The admin API (its own port): campaigns, stock, pause/resume, stats, risk lists.

Every change is one atomic script that also appends its admin event, so the backend's view of
the stream matches the state exactly. Every caller is a named admin user (operators.py); each
change's event names it (`actor`) and the address it acted from (`actor_ip`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from gateway import codes
from gateway.admin import periods
from gateway.admin.campaigns import campaign_state, campaign_stats, load_campaign
from gateway.admin.operators import Actor, Operators, require
from gateway.errors import ApiError, business, invalid
from gateway.http.auth import ClientIp
from gateway.http.intake import decode, json_response, path_id, read_body, require_json
from gateway.models import (
    CampaignPut,
    campaign_decoder,
    cards_decoder,
    list_decoder,
    revoke_decoder,
    stock_decoder,
)
from gateway.records import SEP, Outcome
from gateway.redemptions.cards import seal
from gateway.settings import Role, Settings
from gateway.timefmt import rfc3339_ms, rfc3339_s, to_ms
from gateway.valkey import keys
from gateway.valkey.calls import redis_call
from gateway.valkey.library import Scripts
from risk.lists import LIST_NAMES, apply_update, list_key, validate_entries
from supplier_pool.pool import SupplierPool
from supplier_pool.shared_state import BreakerSync


class Worker(Protocol):
    """What the admin routes use of the worker's services (gateway.app.Services)."""

    settings: Settings
    redis: Any
    scripts: Scripts
    data_key: bytes | None
    claim_ids: codes.ClaimIds
    pool: SupplierPool
    breakers: BreakerSync


WORKER = web.AppKey("admin_worker", Worker)
OPERATORS = web.AppKey("admin_operators", Operators)
CALLER_IP = web.AppKey("admin_caller_ip", ClientIp)
ACTOR = web.RequestKey("admin_actor", Actor)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def require_admin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 unless the bearer token is a known admin user's; 403 unless its role may call
    the route (MIN_ROLE; a route missing from it is for admins). Unrouted paths answer their
    404/405 to any known user."""
    app = request.app
    user = app[OPERATORS].authenticate(request)
    actor = Actor(user.name, user.role, app[CALLER_IP](request))
    route = request.match_info.route
    if route.resource is not None:
        method = "GET" if route.method == "HEAD" else route.method
        require(actor, MIN_ROLE.get((method, route.resource.canonical), "admin"))
    request[ACTOR] = actor
    return await handler(request)


def _now() -> tuple[int, str]:
    now_ms = int(time.time() * 1000)
    return now_ms, rfc3339_ms(now_ms)


def _actor_args(request: web.Request) -> tuple[str, str]:
    """The `actor, actor_ip` arguments every admin script takes, for its event."""
    actor = request[ACTOR]
    return actor.name, actor.ip


async def _admin_event(request: web.Request, fields: dict[str, Any], **more: Any) -> None:
    """Append a change kept outside Valkey scripts (lists, breakers) to the admin stream."""
    services = request.app[WORKER]
    _, now_text = _now()
    actor, actor_ip = _actor_args(request)
    event = {**fields, "ts": now_text, "actor": actor, "actor_ip": actor_ip, **more}
    await redis_call(
        "admin_event",
        services.redis.xadd(
            keys.ADMIN_EVENTS,
            event,
            maxlen=services.settings.redis.stream_max_len,
            approximate=True,
        ),
    )
    await redis_call("admin_registry", services.redis.sadd(keys.EVENT_STREAMS, keys.ADMIN_EVENTS))


async def _body(request: web.Request, services: Worker) -> bytes:
    require_json(request)
    return await read_body(request, 4 * 1024 * 1024, services.settings.server.body_timeout_s)


def _check_campaign(put: CampaignPut, services: Worker) -> None:
    if put.starts_at.tzinfo is None or put.ends_at.tzinfo is None:
        raise invalid("starts_at and ends_at must be RFC 3339 times with an offset (Z for UTC)")
    if put.ends_at <= put.starts_at:
        raise invalid("ends_at must be after starts_at")
    known = {s.id for s in services.settings.suppliers}
    unknown = [s for s in put.benefit.suppliers if s not in known]
    if unknown:
        raise invalid(f"benefit.suppliers: unknown supplier(s) {', '.join(unknown)}")
    kind = put.benefit.kind
    if kind in ("direct_recharge", "link") and not put.benefit.suppliers:
        raise invalid(f"benefit.suppliers: a {kind} benefit needs at least one supplier")
    if kind == "link" and services.data_key is None:
        raise ApiError(503, "unavailable", "no data key configured to seal links")
    if put.budget is not None and put.unit_cost is None:
        raise invalid("budget: needs unit_cost (the cost of one granted unit)")
    if put.daily_rollover and put.daily_stock is None:
        raise invalid("daily_rollover: needs daily_stock")
    try:
        periods.zone(put.timezone)
    except ValueError as exc:
        raise invalid(str(exc)) from None


def _campaign_fields(campaign_id: str, put: CampaignPut) -> list[Any]:
    return [
        "name",
        put.name or campaign_id,
        "starts_ms",
        to_ms(put.starts_at),
        "ends_ms",
        to_ms(put.ends_at),
        "per_user_limit",
        put.per_user_limit,
        "per_device_limit",
        put.per_device_limit,
        "voucher_ttl_s",
        put.voucher_ttl_s,
        "kind",
        put.benefit.kind,
        "sku",
        put.benefit.sku,
        "suppliers",
        ",".join(put.benefit.suppliers),
        # Optional fields: left out when unset, and admin_campaign.lua removes them.
        *(["unit_cost", put.unit_cost] if put.unit_cost is not None else []),
        *(["currency", put.currency] if put.currency is not None else []),
        *_period_fields(put),
    ]


def _period_fields(put: CampaignPut) -> list[Any]:
    """The period budgets given, and the `periods` field the claim function reads."""
    daily = put.daily_stock is not None or put.per_user_daily_limit is not None
    given = {
        "daily_stock": put.daily_stock,
        "daily_rollover": 1 if put.daily_rollover else None,
        "timezone": put.timezone if daily or put.timezone != "UTC" else None,
        "per_user_daily_limit": put.per_user_daily_limit,
        "budget": put.budget,
        "periods": periods.periods_field(
            daily_stock=put.daily_stock,
            daily_rollover=put.daily_rollover,
            per_user_daily_limit=put.per_user_daily_limit,
            budget=put.budget,
            unit_cost=put.unit_cost,
            timezone=put.timezone,
            starts_at=put.starts_at,
            ends_at=put.ends_at,
        ),
    }
    return [item for name, value in given.items() if value is not None for item in (name, value)]


def campaign_document(campaign_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """The admin view of a campaign: its configuration, stock and current state."""
    document: dict[str, Any] = {
        "campaign_id": campaign_id,
        "name": fields["name"],
        "state": campaign_state(fields, int(time.time() * 1000)),
        "starts_at": rfc3339_s(int(fields["starts_ms"])),
        "ends_at": rfc3339_s(int(fields["ends_ms"])),
        "stock_added": int(fields["stock_added"]),
        "stock_left": int(fields["stock_left"]),
        "per_user_limit": int(fields["per_user_limit"]),
        "per_device_limit": int(fields["per_device_limit"]),
        "voucher_ttl_s": int(fields["voucher_ttl_s"]),
        "benefit": {
            "kind": fields["kind"],
            "sku": fields["sku"],
            "suppliers": [s for s in fields["suppliers"].split(",") if s],
        },
    }
    if "unit_cost" in fields:
        document["unit_cost"] = int(fields["unit_cost"])
    if "currency" in fields:
        document["currency"] = fields["currency"]
    for name in ("daily_stock", "per_user_daily_limit", "budget"):
        if name in fields:
            document[name] = int(fields[name])
    if "daily_stock" in fields:
        document["daily_rollover"] = fields.get("daily_rollover") == "1"
    if "timezone" in fields:
        document["timezone"] = fields["timezone"]
    return document


async def _document(services: Worker, campaign_id: str, status: int = 200) -> web.Response:
    fields = await load_campaign(services.redis, campaign_id)
    if fields is None:
        raise business("campaign_not_found")
    return json_response(campaign_document(campaign_id, fields), status)


async def put_campaign(request: web.Request) -> web.Response:
    services = request.app[WORKER]
    campaign_id = path_id(request, "campaign_id")
    put = decode(campaign_decoder, await _body(request, services))
    _check_campaign(put, services)
    try:
        fields = _campaign_fields(campaign_id, put)
    except ValueError as exc:  # the period fields' time range
        raise invalid(str(exc)) from None
    tag = keys.shard_tag(campaign_id)
    _, now_text = _now()
    created = await redis_call(
        "admin_campaign",
        services.scripts.admin_campaign(
            keys=[keys.campaign(tag, campaign_id), keys.events(tag)],
            args=[
                campaign_id,
                now_text,
                services.settings.redis.stream_max_len,
                put.stock,
                *_actor_args(request),
                *fields,
            ],
        ),
    )
    # Registries for `events tail` and operators; idempotent, so outside the atomic step.
    await redis_call("admin_registry", services.redis.sadd(keys.CAMPAIGNS, campaign_id))
    await redis_call("admin_registry", services.redis.sadd(keys.EVENT_STREAMS, keys.events(tag)))
    return await _document(services, campaign_id, 201 if created else 200)


async def change_stock(request: web.Request) -> web.Response:
    services = request.app[WORKER]
    campaign_id = path_id(request, "campaign_id")
    change = decode(stock_decoder, await _body(request, services))
    tag = keys.shard_tag(campaign_id)
    _, now_text = _now()
    found, _added, _left = await redis_call(
        "admin_stock",
        services.scripts.admin_stock(
            keys=[keys.campaign(tag, campaign_id), keys.events(tag)],
            args=[
                campaign_id,
                change.add,
                now_text,
                services.settings.redis.stream_max_len,
                *_actor_args(request),
            ],
        ),
    )
    if not found:
        raise business("campaign_not_found")
    return await _document(services, campaign_id)


def _set_paused(paused: bool) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        services = request.app[WORKER]
        campaign_id = path_id(request, "campaign_id")
        tag = keys.shard_tag(campaign_id)
        _, now_text = _now()
        found = await redis_call(
            "admin_state",
            services.scripts.admin_state(
                keys=[keys.campaign(tag, campaign_id), keys.events(tag)],
                args=[
                    campaign_id,
                    "1" if paused else "0",
                    now_text,
                    services.settings.redis.stream_max_len,
                    *_actor_args(request),
                ],
            ),
        )
        if not found:
            raise business("campaign_not_found")
        return await _document(services, campaign_id)

    return handler


async def get_campaign(request: web.Request) -> web.Response:
    return await _document(request.app[WORKER], path_id(request, "campaign_id"))


async def stats(request: web.Request) -> web.Response:
    services = request.app[WORKER]
    document = await campaign_stats(services.redis, path_id(request, "campaign_id"))
    if document is None:
        raise business("campaign_not_found")
    return json_response(document)


async def put_risk_list(request: web.Request) -> web.Response:
    services = request.app[WORKER]
    name = request.match_info["list"]
    if name not in LIST_NAMES:
        raise ApiError(404, "list_not_found", f"no such list; known: {', '.join(LIST_NAMES)}")
    update = decode(list_decoder, await _body(request, services))
    try:
        add = validate_entries(name, update.add)
        remove = validate_entries(name, update.remove)
        await redis_call("admin_lists", apply_update(services.redis, name, add, remove))
    except ValueError as exc:  # ListError: a bad entry, or one both added and removed
        raise invalid(str(exc)) from None
    size = await redis_call("admin_lists", services.redis.scard(list_key(name)))
    await _admin_event(
        request,
        {"type": "risk.list_changed", "list": name, "added": len(add), "removed": len(remove)},
        size=size,
    )
    return json_response({"list": name, "added": len(add), "removed": len(remove), "size": size})


async def add_cards(request: web.Request) -> web.Response:
    services = request.app[WORKER]
    campaign_id = path_id(request, "campaign_id")
    upload = decode(cards_decoder, await _body(request, services))
    if services.data_key is None:
        raise ApiError(503, "unavailable", "no data key configured for card secrets")
    tag = keys.shard_tag(campaign_id)
    sealed = [seal(services.data_key, campaign_id, c.card_no, c.secret) for c in upload.cards]
    _, now_text = _now()
    size = await redis_call(
        "admin_cards",
        services.scripts.card_add(
            keys=[
                keys.campaign(tag, campaign_id),
                keys.card_pool(tag, campaign_id),
                keys.events(tag),
            ],
            args=[
                campaign_id,
                now_text,
                services.settings.redis.stream_max_len,
                *_actor_args(request),
                *sealed,
            ],
        ),
    )
    if size < 0:
        raise business("campaign_not_found")
    # Counts only: card numbers and secrets never appear in answers, logs or events.
    return json_response({"campaign_id": campaign_id, "added": len(sealed), "pool_size": size})


VOUCHER_RESULTS = {
    0: "voucher_not_found",
    2: "voucher_redeemed",
    3: "request_in_progress",
    4: "voucher_revoked",
}


def _voucher_state(action: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        services = request.app[WORKER]
        code = codes.normalise_code(request.match_info["code"])
        if code is None:
            raise business("voucher_not_found")
        tag = codes.code_tag(code)
        _, now_text = _now()
        result = await redis_call(
            "admin_voucher",
            services.scripts.voucher_state(
                keys=[keys.voucher(tag, code), keys.events(tag)],
                args=[
                    action,
                    now_text,
                    services.settings.redis.stream_max_len,
                    codes.mask_code(code),
                    services.claim_ids.of(code),
                    *_actor_args(request),
                ],
            ),
        )
        if result != 1:
            raise business(VOUCHER_RESULTS[int(result)])
        state = "frozen" if action == "freeze" else "issued"
        return json_response({"voucher_code": code, "state": state})

    return handler


REVOKE_REFUSALS = {
    Outcome.NOT_FOUND: "voucher_not_found",
    Outcome.REDEEMED: "voucher_redeemed",
    Outcome.REDEMPTION_PENDING: "redemption_pending",
}
REVOKE_READS = 3  # the record changes under a revoke only when its code is granted anew


async def _grant_day(
    services: Worker, tag: str, campaign_id: str, expires_ms: int, owner: str
) -> tuple[str, bytes]:
    """The local day the voucher was granted on, and its owner's daily field (lua/claim.lua),
    when the campaign counts grants per day; ('', b'') when it does not."""
    wanted = ("voucher_ttl_s", "timezone", "daily_stock", "per_user_daily_limit")
    campaign = keys.campaign(tag, campaign_id)
    ttl_s, timezone, daily, per_user = [
        value.decode() if isinstance(value, bytes) else value
        for value in await redis_call("admin_voucher", services.redis.hmget(campaign, wanted))
    ]
    if daily is None and per_user is None:
        return "", b""
    granted_ms = expires_ms - int(ttl_s or 0) * 1000
    day = periods.local_day(periods.zone(timezone or "UTC"), granted_ms)
    user_field = b"U" + keys.allowance_field("u", owner)[1:] if per_user is not None else b""
    return str(day), user_field


async def revoke_voucher(request: web.Request) -> web.Response:
    """Revoke an unredeemed voucher (lua/voucher_revoke.lua). The script cannot hash ids, so
    the allowance fields it gives back are derived here from the record read first: its owner,
    and the device the grant counted (lua/claim.lua keeps it when devices have an allowance)."""
    services = request.app[WORKER]
    revoke = decode(revoke_decoder, await _body(request, services))
    code = codes.normalise_code(request.match_info["code"])
    if code is None:
        raise business("voucher_not_found")
    tag = codes.code_tag(code)
    voucher_key = keys.voucher(tag, code)
    for _ in range(REVOKE_READS):
        raw = await redis_call("admin_voucher", services.redis.get(voucher_key))
        record = raw.decode() if isinstance(raw, bytes) else raw
        if record is None or record[0] == "x":
            raise business("voucher_not_found")
        _state, expires, campaign_id, owner, *rest = record.split(SEP)
        counted = rest[1] if record[0] in "if" and len(rest) > 1 else None
        day, user_day_field = await _grant_day(services, tag, campaign_id, int(expires), owner)
        _, now_text = _now()
        outcome, returned = await redis_call(
            "admin_voucher",
            services.scripts.voucher_revoke(
                keys=[voucher_key, keys.campaign(tag, campaign_id), keys.events(tag)],
                args=[
                    "1" if revoke.return_stock else "0",
                    revoke.reason,
                    now_text,
                    services.settings.redis.stream_max_len,
                    codes.mask_code(code),
                    services.claim_ids.of(code),
                    *_actor_args(request),
                    record[1:],
                    keys.allowance_field("u", owner),
                    keys.allowance_field("d", counted) if counted is not None else "",
                    day,
                    user_day_field,
                ],
            ),
        )
        if outcome == Outcome.OK:
            body = {"voucher_code": code, "state": "revoked", "returned": bool(returned)}
            return json_response(body)
        if outcome != Outcome.IN_PROGRESS:
            raise business(REVOKE_REFUSALS[Outcome(int(outcome))])
    raise business("request_in_progress")


def _breaker(services: Worker, supplier_id: str) -> dict[str, Any]:
    return next(s for s in services.pool.snapshot() if s["id"] == supplier_id)


async def list_suppliers(request: web.Request) -> web.Response:
    return json_response({"suppliers": request.app[WORKER].pool.snapshot()})


def _supplier_action(action: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        services = request.app[WORKER]
        supplier_id = request.match_info["supplier_id"]
        if supplier_id not in services.pool.supplier_ids:
            raise ApiError(404, "supplier_not_found", "no such supplier")
        before = _breaker(services, supplier_id)
        await redis_call("admin_breaker", getattr(services.breakers, action)(supplier_id))
        after = _breaker(services, supplier_id)
        await _admin_event(
            request,
            {"type": f"supplier.{action}", "supplier": supplier_id},
            state_before=before["state"],
            state=after["state"],
        )
        return json_response(after)

    return handler


# Every admin route and the least role that may call it (SPEC 4): `viewer` reads; `operator`
# runs campaigns and vouchers; `admin` alone changes risk lists and supplier breakers.
ROUTES: tuple[tuple[str, str, Handler, Role], ...] = (
    ("GET", "/admin/campaigns/{campaign_id}", get_campaign, "viewer"),
    ("GET", "/admin/campaigns/{campaign_id}/stats", stats, "viewer"),
    ("GET", "/admin/suppliers", list_suppliers, "viewer"),
    ("PUT", "/admin/campaigns/{campaign_id}", put_campaign, "operator"),
    ("POST", "/admin/campaigns/{campaign_id}/stock", change_stock, "operator"),
    ("POST", "/admin/campaigns/{campaign_id}/pause", _set_paused(True), "operator"),
    ("POST", "/admin/campaigns/{campaign_id}/resume", _set_paused(False), "operator"),
    ("POST", "/admin/campaigns/{campaign_id}/card-secrets", add_cards, "operator"),
    ("POST", "/admin/vouchers/{code}/freeze", _voucher_state("freeze"), "operator"),
    ("POST", "/admin/vouchers/{code}/unfreeze", _voucher_state("unfreeze"), "operator"),
    ("POST", "/admin/vouchers/{code}/revoke", revoke_voucher, "operator"),
    ("PUT", "/admin/risk/lists/{list}", put_risk_list, "admin"),
    ("POST", "/admin/suppliers/{supplier_id}/force-open", _supplier_action("force_open"), "admin"),
    (
        "POST",
        "/admin/suppliers/{supplier_id}/force-closed",
        _supplier_action("force_closed"),
        "admin",
    ),
    ("POST", "/admin/suppliers/{supplier_id}/reset", _supplier_action("reset"), "admin"),
)
MIN_ROLE: dict[tuple[str, str], Role] = {(method, path): role for method, path, _, role in ROUTES}


def add_routes(app: web.Application) -> None:
    """The admin routes, behind require_admin; app[WORKER] must be set already."""
    settings = app[WORKER].settings
    app[OPERATORS] = Operators(settings.admin.operators)
    app[CALLER_IP] = ClientIp(settings.server.trusted_proxies)
    app.middlewares.append(require_admin)
    for method, path, handler, _ in ROUTES:
        if method == "GET":
            app.router.add_get(path, handler)  # and HEAD, which MIN_ROLE reads as GET
        else:
            app.router.add_route(method, path, handler)
