"""The OpenAPI 3.0 description of the public API, served at /openapi.json."""

from __future__ import annotations

from typing import Any

import orjson

ID = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]+$"}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "request_id"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "request_id": {"type": "string"},
            },
        }
    },
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "invalid_request",
        401: "unauthorized",
        403: "risk_denied or challenge_required",
        404: "not found",
        408: "request_timeout (body not received in time)",
        409: "business rejection or request_in_progress",
        413: "payload_too_large",
        415: "unsupported_media_type",
        422: "idempotency_key_reused",
        429: "rate_limited",
        503: "overloaded, unavailable, suppliers_unavailable or pool_empty",
    }
    return {str(s): _error(text[s]) for s in statuses}


def _json_body(ref: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
}
CAMPAIGN_ID = {"name": "campaign_id", "in": "path", "required": True, "schema": ID}
REDEMPTION = {
    "type": "object",
    "required": ["redemption_id", "voucher_code", "status"],
    "properties": {
        "redemption_id": {"type": "string"},
        "voucher_code": {"type": "string"},
        "status": {"type": "string", "enum": ["delivered", "pending", "failed"]},
        "delivery": {"type": "object"},
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Benefits gateway", "version": "1.0.0"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": ERROR,
            "ClaimRequest": {
                "type": "object",
                "additionalProperties": False,
                "required": ["user_id", "device_id"],
                "properties": {"user_id": ID, "device_id": ID},
            },
            "ClaimGranted": {
                "type": "object",
                "required": ["claim_id", "campaign_id", "user_id", "voucher"],
                "properties": {
                    "claim_id": {"type": "string"},
                    "campaign_id": {"type": "string"},
                    "user_id": {"type": "string"},
                    "voucher": {
                        "type": "object",
                        "required": ["code", "expires_at"],
                        "properties": {
                            "code": {"type": "string"},
                            "expires_at": {"type": "string", "format": "date-time"},
                        },
                    },
                },
            },
            "Campaign": {
                "type": "object",
                "required": ["campaign_id", "state", "starts_at", "ends_at", "stock_left"],
                "properties": {
                    "campaign_id": {"type": "string"},
                    "state": {
                        "type": "string",
                        "enum": ["scheduled", "active", "paused", "ended", "sold_out"],
                    },
                    "starts_at": {"type": "string", "format": "date-time"},
                    "ends_at": {"type": "string", "format": "date-time"},
                    "stock_left": {"type": "integer", "minimum": 0},
                },
            },
            "RedeemRequest": {
                "type": "object",
                "additionalProperties": False,
                "required": ["voucher_code", "user_id", "device_id"],
                "properties": {
                    "voucher_code": {"type": "string", "minLength": 1, "maxLength": 64},
                    "user_id": ID,
                    "device_id": ID,
                    "account": ID,
                },
            },
            "Redemption": REDEMPTION,
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/v1/campaigns/{campaign_id}/claims": {
            "post": {
                "operationId": "claim",
                "summary": "Claim one unit of a campaign's stock",
                "parameters": [CAMPAIGN_ID, IDEMPOTENCY_KEY],
                "requestBody": _json_body("ClaimRequest"),
                "responses": {
                    "201": {
                        "description": "granted",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ClaimGranted"}
                            }
                        },
                    },
                    **_errors(400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503),
                },
            }
        },
        "/v1/campaigns/{campaign_id}": {
            "get": {
                "operationId": "getCampaign",
                "summary": "A campaign's public state (cached up to 1 s)",
                "parameters": [CAMPAIGN_ID],
                "responses": {
                    "200": {
                        "description": "the campaign",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Campaign"}
                            }
                        },
                    },
                    **_errors(400, 401, 404, 503),
                },
            }
        },
        "/v1/redemptions": {
            "post": {
                "operationId": "redeem",
                "summary": "Redeem a voucher: deliver its benefit",
                "parameters": [IDEMPOTENCY_KEY],
                "requestBody": _json_body("RedeemRequest"),
                "responses": {
                    "200": {
                        "description": "delivered",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Redemption"}
                            }
                        },
                    },
                    "202": {
                        "description": "pending: supplier outcome not yet known",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Redemption"}
                            }
                        },
                    },
                    **_errors(400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503),
                },
            }
        },
        "/v1/redemptions/{redemption_id}": {
            "get": {
                "operationId": "getRedemption",
                "parameters": [
                    {"name": "redemption_id", "in": "path", "required": True, "schema": ID}
                ],
                "responses": {
                    "200": {
                        "description": "the redemption",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Redemption"}
                            }
                        },
                    },
                    **_errors(400, 401, 404, 503),
                },
            }
        },
        "/healthz": {"get": {"security": [], "responses": {"200": {"description": "up"}}}},
        "/readyz": {
            "get": {
                "security": [],
                "responses": {
                    "200": {"description": "ready"},
                    "503": {"description": "Redis unreachable or scripts missing"},
                },
            }
        },
        "/metrics": {
            "get": {"security": [], "responses": {"200": {"description": "Prometheus text"}}}
        },
    },
}

OPENAPI_JSON = orjson.dumps(DOCUMENT)
