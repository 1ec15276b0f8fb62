"""Short single-purpose middlewares: envelope + request id + timing, and load shedding.

`enveloped` and `Shedder` are also called directly by the claim route, which skips aiohttp's
router and middleware chain (gateway/handlers.py `PublicDispatch`) but answers the same way, its
errors included, as `gateway.wire.Answer`s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal, overload

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway import randomness
from gateway.errors import ApiError, business
from gateway.http.wire import Answer
from gateway.models import ErrorBody, ErrorDetail, encoder
from gateway.telemetry import metrics, tally

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WireHandler = Callable[[web.Request], Awaitable[Answer]]
REQUEST_ID = web.RequestKey("request_id", str)
log = logging.getLogger("gateway.http")

# aiohttp's own refusals (no route, wrong method, body too large), in the envelope.
HTTP_CODES = {
    404: ("not_found", "no such route"),
    405: ("method_not_allowed", "method not allowed on this route"),
    413: ("payload_too_large", "request body exceeds the configured limit"),
}


def error_response(error: ApiError, request_id: str, wire: bool = False) -> web.Response | Answer:
    """The SPEC's envelope; its request_id equals the X-Request-Id header.

    An `Answer` written as is with `wire` (the direct claim route), else a `web.Response`.
    """
    rid = error.request_id or request_id
    body = encoder.encode(ErrorBody(ErrorDetail(error.code, error.message, rid)))
    response: web.Response | Answer
    if wire:
        response = Answer(error.status, body, dict(error.headers))
    else:
        response = web.Response(status=error.status, body=body, content_type="application/json")
        response.headers.update(error.headers)
    response.headers["X-Request-Id"] = rid
    if error.headers.get("Connection") == "close":
        response.force_close()
    return response


def _as_api_error(exc: web.HTTPException) -> ApiError:
    code, message = HTTP_CODES.get(exc.status, ("http_error", exc.reason))
    allow = exc.headers.get("Allow")
    return ApiError(exc.status, code, message, {"Allow": allow} if allow is not None else None)


@overload
async def enveloped(
    request: web.Request,
    handler: Handler,
    route: str,
    shedder: Shedder | None = None,
    wire: Literal[False] = False,
) -> web.StreamResponse: ...


@overload
async def enveloped(
    request: web.Request,
    handler: WireHandler,
    route: str,
    shedder: Shedder | None,
    wire: Literal[True],
) -> Answer: ...


async def enveloped(
    request: web.Request,
    handler: Handler | WireHandler,
    route: str,
    shedder: Shedder | None = None,
    wire: bool = False,
) -> web.StreamResponse | Answer:
    """Request id, error envelope, load shedding and per-route metrics around one handler.

    With `wire`, the handler returns `Answer`s and errors are answered as `Answer`s too.
    """
    request_id = randomness.token_hex(8)
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    response: web.StreamResponse | Answer
    try:
        if shedder is None:
            response = await handler(request)
        else:
            with shedder:
                response = await handler(request)
        response.headers["X-Request-Id"] = request_id
    except ApiError as error:
        response = error_response(error, request_id, wire)
    except web.HTTPException as exc:
        response = error_response(_as_api_error(exc), request_id, wire)
    except Exception:
        log.exception("unhandled error", extra={"request_id": request_id})
        response = error_response(ApiError(500, "internal", "internal error"), request_id, wire)
    status = str(response.status)
    metrics.http_requests.labels(route, request.method, status).inc()
    metrics.http_latency.labels(route, status).observe(time.perf_counter() - started)
    return response


@web.middleware
async def envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`enveloped` for every routed answer, labelled with the route's pattern."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    return await enveloped(request, handler, route)


class Shedder:
    """Refuses work past `max_in_flight` concurrent requests: 503 overloaded + Retry-After.

    One per worker, shared by the routed requests (as a middleware) and the claim route; the
    in-flight gauge reads it at each metrics flush rather than being moved twice a request.
    """

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        tally.sample(metrics.in_flight_gauge, lambda: self.in_flight)

    def __enter__(self) -> None:
        """Count one more request in flight, or raise 503 overloaded."""
        if self.in_flight >= self.max_in_flight:
            metrics.shed.inc()
            raise business("overloaded", {"Retry-After": "1"})
        self.in_flight += 1

    def __exit__(self, *exc_info: object) -> None:
        self.in_flight -= 1

    def middleware(self) -> Middleware:
        @web.middleware
        async def shed_load(request: web.Request, handler: Handler) -> web.StreamResponse:
            with self:
                return await handler(request)

        return shed_load
