"""Request ids and the SPEC error envelope, as two short middlewares."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import msgspec
from aiohttp import web

log = logging.getLogger("backend.http")
REQUEST_ID = web.RequestKey("request_id", str)
_encode = msgspec.json.Encoder().encode


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def error_response(request: web.Request, status: int, code: str, message: str) -> web.Response:
    body = {"error": {"code": code, "message": message, "request_id": request[REQUEST_ID]}}
    return web.Response(status=status, body=_encode(body), content_type="application/json")


def json_response(document: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_encode(document), content_type="application/json")


@web.middleware
async def request_id(request: web.Request, handler: Any) -> web.StreamResponse:
    request[REQUEST_ID] = uuid.uuid4().hex
    response: web.StreamResponse = await handler(request)
    response.headers["X-Request-Id"] = request[REQUEST_ID]
    return response


@web.middleware
async def envelope(request: web.Request, handler: Any) -> web.StreamResponse:
    """Known failures become the envelope; unknown ones are logged and answered 500."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ApiError as exc:
        return error_response(request, exc.status, exc.code, exc.message)
    except web.HTTPException as exc:  # router: 404 no such route, 405 method
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "invalid_request")
        return error_response(request, exc.status, code, exc.reason)
    except Exception:
        log.exception("unhandled error", extra={"request_id": request[REQUEST_ID]})
        return error_response(request, 500, "internal", "internal error")
