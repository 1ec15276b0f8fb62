"""The OpenAPI 3.1 documents of the public API (SPEC §3) and the admin API (SPEC §4).

Every body schema is generated from its msgspec Struct (`msgspec.json.schema_components`), so
the documents cannot drift from what the gateway decodes and encodes. What is written by hand
is the list of routes: per route its request body, its answers and every error status with the
codes it may carry. Both documents are built once at import and served as bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import msgspec
import orjson

from gateway import models
from gateway.http import answers

VERSION = "1.0.0"
SCHEMAS = "#/components/schemas/{name}"

# Error statuses and the codes each may carry; a route lists the statuses it can answer.
AUTH = {401: "unauthorized"}
BAD_ID = {400: "invalid_request (an id in the path is malformed)"}
BODY = {
    400: "invalid_request (malformed body or headers, missing Idempotency-Key)",
    408: "request_timeout (the body was not received in time; the connection is closed)",
    413: "payload_too_large",
    415: "unsupported_media_type",
}
UNAVAILABLE = {503: "unavailable (state store unreachable), with Retry-After"}
SHED = {503: "overloaded (shedding load) or unavailable (state store unreachable), Retry-After"}
IDEMPOTENT = {
    409: "request_in_progress (the first request with this Idempotency-Key is being decided)",
    422: "idempotency_key_reused (same Idempotency-Key, different body)",
}
RISK = {403: "risk_denied or challenge_required (pass it with X-Challenge-Pass)"}
FORBIDDEN = {403: "forbidden (the admin token's role may not do this)"}


class Route(NamedTuple):
    """One operation: its answers (status -> Struct, or a media type for non-JSON bodies)."""

    method: str
    path: str
    operation_id: str
    summary: str
    answers: Mapping[int, Any]
    errors: Mapping[int, str]
    request: type | None = None
    idempotent: bool = False
    public: bool = False  # no caller authentication


def _merge(*parts: Mapping[int, str]) -> dict[int, str]:
    """Error statuses from several groups; codes of the same status are joined."""
    merged: dict[int, str] = {}
    for part in parts:
        for status, codes in part.items():
            merged[status] = f"{merged[status]}; {codes}" if status in merged else codes
    return dict(sorted(merged.items()))


# Each port describes itself: its document and its docs page, open to anyone.
DOC_ROUTES = (
    Route(
        "get",
        "/openapi.json",
        "openapi",
        "This document",
        {200: "application/json"},
        {},
        public=True,
    ),
    Route(
        "get", "/docs", "docs", "This document in Swagger UI", {200: "text/html"}, {}, public=True
    ),
)


CLAIM_409 = {
    409: "sold_out, limit_reached, daily_stock_exhausted (Retry-After), budget_exhausted, "
    "campaign_not_active"
}
REDEEM_409 = {409: "voucher_redeemed, voucher_frozen, voucher_expired, voucher_revoked"}
REDEEM_503 = {503: "suppliers_unavailable or pool_empty (the voucher stays redeemable)"}

PUBLIC_ROUTES = [
    Route(
        "post",
        "/v1/campaigns/{campaign_id}/claims",
        "claim",
        "Claim one unit of a campaign's stock (SPEC §3.1)",
        {201: models.ClaimGranted},
        _merge(
            BODY,
            AUTH,
            RISK,
            {404: "campaign_not_found"},
            CLAIM_409,
            IDEMPOTENT,
            {429: "rate_limited, with Retry-After"},
            SHED,
        ),
        models.ClaimRequest,
        idempotent=True,
    ),
    Route(
        "post",
        "/v1/redemptions",
        "redeem",
        "Redeem a voucher: deliver its benefit (SPEC §3.2)",
        {200: models.RedemptionView, 202: models.RedemptionView},
        _merge(
            BODY,
            AUTH,
            RISK,
            {404: "voucher_not_found (no such voucher, or not this user's)"},
            REDEEM_409,
            IDEMPOTENT,
            {429: "rate_limited (too many failed attempts from this IP or device)"},
            REDEEM_503,
            SHED,
        ),
        models.RedeemRequest,
        idempotent=True,
    ),
    Route(
        "get",
        "/v1/campaigns/{campaign_id}",
        "getCampaign",
        "A campaign's public state, cached up to 1 s (SPEC §3.3)",
        {200: models.CampaignView},
        _merge(BAD_ID, AUTH, {404: "campaign_not_found"}, SHED),
    ),
    Route(
        "get",
        "/v1/redemptions/{redemption_id}",
        "getRedemption",
        "A redemption's current state, to the client that made it (SPEC §3.2)",
        {200: models.RedemptionView},
        _merge(BAD_ID, AUTH, {404: "redemption_not_found"}, SHED),
    ),
    Route(
        "get", "/healthz", "healthz", "The process is up", {200: answers.Health}, {}, public=True
    ),
    Route(
        "get",
        "/readyz",
        "readyz",
        "Valkey reachable and every script loaded",
        {200: answers.Readiness, 503: answers.Readiness},
        {},
        public=True,
    ),
    Route(
        "get",
        "/metrics",
        "metrics",
        "Prometheus text format, aggregated over all workers",
        {200: "text/plain"},
        {},
        public=True,
    ),
    *DOC_ROUTES,
]

ADMIN_BODY = _merge(BODY, AUTH, FORBIDDEN, UNAVAILABLE)
ADMIN_READ = _merge(BAD_ID, AUTH, FORBIDDEN, UNAVAILABLE)
CAMPAIGN_404 = {404: "campaign_not_found"}


def _campaign_action(action: str, summary: str) -> Route:
    return Route(
        "post",
        f"/admin/campaigns/{{campaign_id}}/{action}",
        f"{action}Campaign",
        summary,
        {200: answers.CampaignDocument},
        _merge(ADMIN_READ, CAMPAIGN_404),
    )


def _voucher_action(action: str, summary: str) -> Route:
    return Route(
        "post",
        f"/admin/vouchers/{{code}}/{action}",
        f"{action}Voucher",
        summary,
        {200: answers.VoucherState},
        _merge(
            AUTH,
            FORBIDDEN,
            {404: "voucher_not_found"},
            {
                409: "voucher_redeemed, voucher_revoked or request_in_progress (a redemption "
                "is being decided)"
            },
            UNAVAILABLE,
        ),
    )


def _supplier_action(action: str, operation: str, summary: str) -> Route:
    return Route(
        "post",
        f"/admin/suppliers/{{supplier_id}}/{action}",
        operation,
        summary,
        {200: answers.SupplierState},
        _merge(AUTH, FORBIDDEN, {404: "supplier_not_found"}, UNAVAILABLE),
    )


ADMIN_ROUTES = [
    Route(
        "put",
        "/admin/campaigns/{campaign_id}",
        "putCampaign",
        "Create (201) or update (200) a campaign; `stock` counts only on create",
        {200: answers.CampaignDocument, 201: answers.CampaignDocument},
        ADMIN_BODY,
        models.CampaignPut,
    ),
    Route(
        "get",
        "/admin/campaigns/{campaign_id}",
        "getCampaign",
        "A campaign's configuration, stock and state",
        {200: answers.CampaignDocument},
        _merge(ADMIN_READ, CAMPAIGN_404),
    ),
    Route(
        "post",
        "/admin/campaigns/{campaign_id}/stock",
        "changeStock",
        "Add stock (a negative `add` removes; stock left is clamped at 0)",
        {200: answers.CampaignDocument},
        _merge(ADMIN_BODY, CAMPAIGN_404),
        models.StockChange,
    ),
    _campaign_action("pause", "Pause a campaign: claims answer campaign_not_active"),
    _campaign_action("resume", "Resume a paused campaign"),
    Route(
        "get",
        "/admin/campaigns/{campaign_id}/stats",
        "campaignStats",
        "Counts decided in Valkey; sold-outs answered from a worker's flag are only in /metrics",
        {200: answers.CampaignStats},
        _merge(ADMIN_READ, CAMPAIGN_404),
    ),
    Route(
        "post",
        "/admin/campaigns/{campaign_id}/card-secrets",
        "addCardSecrets",
        "Add card secrets to a card_secret campaign's pool (stored encrypted, never logged)",
        {200: answers.CardsAdded},
        _merge(ADMIN_BODY, CAMPAIGN_404, {503: "unavailable (no data key configured)"}),
        models.CardUpload,
    ),
    _voucher_action("freeze", "Freeze a voucher: it cannot be redeemed until unfrozen"),
    _voucher_action("unfreeze", "Unfreeze a voucher"),
    Route(
        "post",
        "/admin/vouchers/{code}/revoke",
        "revokeVoucher",
        "Revoke an unredeemed voucher, its unit back to stock with `return_stock`; idempotent",
        {200: answers.VoucherRevoked},
        _merge(
            ADMIN_BODY,
            {404: "voucher_not_found"},
            {409: "voucher_redeemed or redemption_pending (a direct recharge is in flight)"},
        ),
        models.RevokeRequest,
    ),
    Route(
        "put",
        "/admin/risk/lists/{list}",
        "updateRiskList",
        "Add to and remove from blocked_users, blocked_devices, blocked_ips or allowed_users",
        {200: answers.ListChanged},
        _merge(ADMIN_BODY, {404: "list_not_found"}),
        models.ListUpdate,
    ),
    Route(
        "get",
        "/admin/suppliers",
        "listSuppliers",
        "Each supplier's breaker state and recent figures",
        {200: answers.SupplierList},
        _merge(AUTH, FORBIDDEN),
    ),
    _supplier_action("force-open", "forceOpenSupplier", "Open a supplier's breaker by hand"),
    _supplier_action("force-closed", "forceClosedSupplier", "Close a supplier's breaker by hand"),
    _supplier_action("reset", "resetSupplier", "Reset a supplier's breaker to automatic"),
    *DOC_ROUTES,
]

_ID_SCHEMA = msgspec.json.schema(models.Id)
PARAMETER_SCHEMAS: dict[str, dict[str, Any]] = {
    "campaign_id": _ID_SCHEMA,
    "redemption_id": _ID_SCHEMA,
    "supplier_id": {"type": "string", "minLength": 1},
    "code": {"type": "string", "minLength": 1, "maxLength": 64},
    "list": {
        "type": "string",
        "enum": ["blocked_users", "blocked_devices", "blocked_ips", "allowed_users"],
    },
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "1-255 visible ASCII characters; a retry with the same key and body "
    "answers the first response again, with `Idempotent-Replayed: true`",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
}
CHALLENGE_PASS = {
    "name": "X-Challenge-Pass",
    "in": "header",
    "required": False,
    "description": "EXP.NONCE.SIG, minted by the client's backend after a captcha: lifts a "
    "`challenge` decision once for this user and device (docs/challenges.md)",
    # Not a pattern: a malformed pass is answered as any bad pass is (403), never 400.
    "schema": {"type": "string"},
}
HEADERS = {
    "X-Request-Id": {
        "description": "This request's id; equals `error.request_id` in an error body",
        "schema": {"type": "string"},
    },
}
RETRY_AFTER = {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
REPLAYED = {
    "description": "`true` when this is the stored answer to an earlier request with this key",
    "schema": {"type": "string", "enum": ["true"]},
}


def _content(body: Any, name: str | None) -> dict[str, Any]:
    if isinstance(body, str):
        return {body: {"schema": {"type": "string"} if body != "application/json" else {}}}
    return {"application/json": {"schema": {"$ref": SCHEMAS.format(name=name)}}}


def _path_parameters(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [
        {"name": name, "in": "path", "required": True, "schema": PARAMETER_SCHEMAS[name]}
        for name in names
    ]


def _operation(route: Route) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, body in route.answers.items():
        headers = dict(HEADERS)
        if route.idempotent:
            headers["Idempotent-Replayed"] = REPLAYED
        name = None if isinstance(body, str) else body.__name__
        responses[str(status)] = {
            "description": "success" if status < 300 else "not ready",
            "headers": headers,
            "content": _content(body, name),
        }
    for status, codes in route.errors.items():
        headers = dict(HEADERS)
        if status in (429, 503) or (status == 409 and "Retry-After" in codes):
            headers["Retry-After"] = RETRY_AFTER
        responses[str(status)] = {
            "description": f"error.code: {codes}",
            "headers": headers,
            "content": _content(models.ErrorBody, "ErrorBody"),
        }
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "responses": responses,
    }
    parameters = _path_parameters(route.path)
    if route.idempotent:
        parameters.append(IDEMPOTENCY_KEY)
    if RISK[403] in route.errors.values():
        parameters.append(CHALLENGE_PASS)
    if parameters:
        operation["parameters"] = parameters
    if route.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": _content(route.request, route.request.__name__),
        }
    if route.public:
        operation["security"] = []
    return operation


def _struct_types(routes: list[Route]) -> list[Any]:
    found: list[Any] = []
    for route in routes:
        bodies = [*route.answers.values(), route.request]
        if route.errors:
            bodies.append(models.ErrorBody)
        found += [b for b in bodies if b is not None and not isinstance(b, str)]
    return list(dict.fromkeys(found))


def build(title: str, description: str, routes: list[Route], token: str) -> dict[str, Any]:
    """An OpenAPI 3.1 document for `routes`, schemas generated from their Structs."""
    _, schemas = msgspec.json.schema_components(_struct_types(routes), ref_template=SCHEMAS)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": VERSION, "description": description},
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": token}
            },
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


PUBLIC = build(
    "Benefits gateway: public API",
    "Claims and redemptions for flash sales. Every error answers the envelope "
    '`{"error": {"code", "message", "request_id"}}`.',
    PUBLIC_ROUTES,
    "A client's API key (`[[clients]] api_key`)",
)
ADMIN = build(
    "Benefits gateway: admin API",
    "Campaigns, stock, card secrets, vouchers, risk lists and suppliers; on its own port. "
    "Every error answers the same envelope as the public API.",
    ADMIN_ROUTES,
    "An admin token (`admin.token` or `[[admin.users]] token`)",
)


def _as_30(node: Any) -> Any:
    """A 3.1 schema written the 3.0 way: `nullable: true`, no empty `required` list."""
    if isinstance(node, list):
        return [_as_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _as_30(value) for key, value in node.items() if (key, value) != ("required", [])}
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        del node["anyOf"]
        only = rest[0] if len(rest) == 1 else {"anyOf": rest}
        only = {"allOf": [only]} if "$ref" in only else only
        node = {**node, **only, "nullable": True}
    return node


def for_swagger_ui(document: dict[str, Any]) -> dict[str, Any]:
    """The document as OpenAPI 3.0.3, for the bundled Swagger UI (4.x renders 3.0 only)."""
    view = _as_30(document)
    view["openapi"] = "3.0.3"
    return dict(view)


OPENAPI_JSON = orjson.dumps(PUBLIC)
ADMIN_JSON = orjson.dumps(ADMIN)
PUBLIC_UI_JSON = orjson.dumps(for_swagger_ui(PUBLIC))
ADMIN_UI_JSON = orjson.dumps(for_swagger_ui(ADMIN))
