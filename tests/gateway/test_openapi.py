"""Both OpenAPI documents are valid 3.1, describe every route each port serves with every status
of SPEC §3 and §4, and each port serves them with a Swagger UI page that needs nothing online."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import orjson
import pytest
from aiohttp import web
from schemathesis.specs.openapi.definitions import OPENAPI_30, OPENAPI_31

from gateway.app import create_app
from gateway.http import docs_page, openapi
from gateway.settings import parse
from tests.gateway.conftest import ADMIN_TOKEN, BASE_CONFIG, Gateway

DOCUMENTS = {"public": openapi.PUBLIC, "admin": openapi.ADMIN}

# The statuses SPEC §3 and §4 give each route (the error envelope's codes are in descriptions).
SPEC_STATUSES: dict[tuple[str, str], set[int]] = {
    ("post", "/v1/campaigns/{campaign_id}/claims"): {
        201,
        400,
        401,
        403,
        404,
        409,
        413,
        415,
        422,
        429,
        503,
    },
    ("post", "/v1/redemptions"): {200, 202, 400, 401, 403, 404, 409, 413, 415, 422, 429, 503},
    ("get", "/v1/campaigns/{campaign_id}"): {200, 401, 404},
    ("get", "/v1/redemptions/{redemption_id}"): {200, 401, 404},
    ("get", "/healthz"): {200},
    ("get", "/readyz"): {200, 503},
    ("get", "/metrics"): {200},
    ("get", "/openapi.json"): {200},
    ("put", "/admin/campaigns/{campaign_id}"): {200, 201, 400, 401, 403},
    ("get", "/admin/campaigns/{campaign_id}"): {200, 401, 403, 404},
    ("post", "/admin/campaigns/{campaign_id}/stock"): {200, 400, 401, 403, 404},
    ("post", "/admin/campaigns/{campaign_id}/pause"): {200, 401, 403, 404},
    ("post", "/admin/campaigns/{campaign_id}/resume"): {200, 401, 403, 404},
    ("post", "/admin/campaigns/{campaign_id}/card-secrets"): {200, 400, 401, 403, 404},
    ("get", "/admin/campaigns/{campaign_id}/stats"): {200, 401, 403, 404},
    ("post", "/admin/vouchers/{code}/freeze"): {200, 401, 403, 404, 409},
    ("post", "/admin/vouchers/{code}/unfreeze"): {200, 401, 403, 404, 409},
    ("put", "/admin/risk/lists/{list}"): {200, 400, 401, 403},
    ("get", "/admin/suppliers"): {200, 401, 403},
    ("post", "/admin/suppliers/{supplier_id}/force-open"): {200, 401, 403, 404},
    ("post", "/admin/suppliers/{supplier_id}/force-closed"): {200, 401, 403, 404},
    ("post", "/admin/suppliers/{supplier_id}/reset"): {200, 401, 403, 404},
}
# SPEC §3.1's business codes, each named in the claim route's 409 (or 404) description.
CLAIM_CODES = (
    "sold_out",
    "limit_reached",
    "daily_stock_exhausted",
    "budget_exhausted",
    "campaign_not_active",
    "request_in_progress",
    "campaign_not_found",
    "idempotency_key_reused",
    "rate_limited",
    "risk_denied",
    "challenge_required",
    "invalid_request",
    "unsupported_media_type",
    "payload_too_large",
    "overloaded",
    "unavailable",
)
REDEEM_CODES = (
    "voucher_not_found",
    "voucher_redeemed",
    "voucher_frozen",
    "voucher_expired",
    "voucher_revoked",
    "suppliers_unavailable",
    "pool_empty",
)


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route the app answers, static files and HEAD aside."""
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("formatter") or info.get("path")
        if path and route.method not in ("HEAD", "*") and "prefix" not in info:
            found.add((route.method.lower(), path))
    return found


@pytest.mark.parametrize(
    ("name", "meta"), [("public", OPENAPI_31), ("admin", OPENAPI_31)], ids=["public", "admin"]
)
def test_each_document_is_valid_openapi_31(name: str, meta: dict[str, Any]) -> None:
    document = DOCUMENTS[name]
    assert document["openapi"] == "3.1.0"
    errors = [str(e) for e in jsonschema_rs.validator_for(meta).iter_errors(document)]
    assert errors == []
    view = openapi.for_swagger_ui(document)
    assert view["openapi"] == "3.0.3"
    errors = [str(e) for e in jsonschema_rs.validator_for(OPENAPI_30).iter_errors(view)]
    assert errors == []


def test_a_broken_document_fails_the_validation() -> None:
    broken = {**openapi.PUBLIC, "paths": {"/x": {"get": {"responses": {"200": {}}}}}}
    assert list(jsonschema_rs.validator_for(OPENAPI_31).iter_errors(broken))


def test_every_served_route_is_documented_and_every_documented_route_served() -> None:
    settings = parse(BASE_CONFIG, env={})
    public, admin = create_app(settings, "redis://127.0.0.1:1")
    for app, document in ((public, openapi.PUBLIC), (admin, openapi.ADMIN)):
        documented = set(operations(document)) - {("get", "/docs")}
        assert served_routes(app) - {("get", "/docs"), ("get", docs_page.UI_DOCUMENT)} == (
            documented
        )


def test_every_spec_status_of_every_route_is_declared() -> None:
    declared = {**operations(openapi.PUBLIC), **operations(openapi.ADMIN)}
    for route, statuses in SPEC_STATUSES.items():
        assert route in declared, route
        assert statuses <= {int(s) for s in declared[route]["responses"]}, route
    documented = set(operations(openapi.PUBLIC)) | set(operations(openapi.ADMIN))
    assert documented - {("get", "/docs")} == set(SPEC_STATUSES)


def test_error_answers_use_the_envelope_and_name_their_codes() -> None:
    claim = operations(openapi.PUBLIC)[("post", "/v1/campaigns/{campaign_id}/claims")]
    redeem = operations(openapi.PUBLIC)[("post", "/v1/redemptions")]
    for operation, codes in ((claim, CLAIM_CODES), (redeem, REDEEM_CODES)):
        described = " ".join(r["description"] for r in operation["responses"].values())
        assert [c for c in codes if c not in described] == []
    for document in DOCUMENTS.values():
        for (_, path), operation in operations(document).items():
            for status, response in operation["responses"].items():
                if int(status) >= 400 and path != "/readyz":  # readyz answers its own shape
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
    envelope = openapi.PUBLIC["components"]["schemas"]["ErrorDetail"]
    assert set(envelope["required"]) == {"code", "message", "request_id"}


def test_body_schemas_come_from_the_structs() -> None:
    schemas = openapi.PUBLIC["components"]["schemas"]
    claim = schemas["ClaimRequest"]
    assert claim["required"] == ["user_id", "device_id"]
    assert claim["additionalProperties"] is False
    assert claim["properties"]["user_id"]["maxLength"] == 128
    benefit = openapi.ADMIN["components"]["schemas"]["Benefit"]
    assert sorted(benefit["properties"]["kind"]["enum"]) == [
        "card_secret",
        "direct_recharge",
        "link",
        "voucher",
    ]


async def test_each_port_serves_its_document_and_an_offline_docs_page(gateway: Gateway) -> None:
    for client, document in ((gateway.public, openapi.PUBLIC), (gateway.admin, openapi.ADMIN)):
        # no credentials: the admin port's documents open without the admin token
        served = await client.get("/openapi.json")
        assert served.status == 200
        assert orjson.loads(await served.read()) == document
        page = await client.get("/docs")
        assert page.status == 200
        assert page.content_type == "text/html"
        html = await page.text()
        assert "http://" not in html and "https://" not in html  # nothing fetched online
        assert f'url: "{docs_page.UI_DOCUMENT}"' in html
        view = await client.get(docs_page.UI_DOCUMENT)
        assert orjson.loads(await view.read()) == openapi.for_swagger_ui(document)
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            static = await client.get(f"{docs_page.STATIC}/{asset}")
            assert static.status == 200, asset
            assert len(await static.read()) > 10_000
        missing = await client.get(f"{docs_page.STATIC}/no-such-file.js")
        assert missing.status == 404
    # the docs are open; the admin API itself still wants its token
    closed = await gateway.admin.get("/admin/suppliers")
    assert closed.status == 401
    opened = await gateway.admin.get(
        "/admin/suppliers", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert opened.status == 200


def test_the_routes_a_challenge_may_refuse_take_a_challenge_pass() -> None:
    taking = {
        (path, method)
        for path, operations in openapi.PUBLIC["paths"].items()
        for method, operation in operations.items()
        if any(p["name"] == "X-Challenge-Pass" for p in operation.get("parameters", []))
    }
    assert taking == {("/v1/campaigns/{campaign_id}/claims", "post"), ("/v1/redemptions", "post")}
