"""Reading a request safely: body size and time limits, content type, ids, the idempotency key."""

from __future__ import annotations

import asyncio
import re
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from gateway.errors import ApiError, invalid
from gateway.models import describe_decode_error, encoder

T = TypeVar("T")

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def require_json(request: web.Request) -> None:
    """415 unless the body is declared application/json (any charset parameter is fine)."""
    if request.headers.get("Content-Type") == "application/json":  # the common case, unparsed
        return
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")


def body_if_here(request: web.Request, max_bytes: int) -> bytes | None:
    """The whole body when it has already arrived (small bodies), else None; 413 past max."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise _too_large(max_bytes)
    if not request.content.is_eof():
        return None
    body = request.content.read_nowait()
    if len(body) > max_bytes:
        raise _too_large(max_bytes)
    return body


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"body exceeds {max_bytes} bytes")


async def read_body(request: web.Request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, or 413 past max_bytes, or 408 (connection closed) when it trickles."""
    body = body_if_here(request, max_bytes)
    if body is not None:  # no timer, no await
        return body
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        # A client trickling its body must not hold the worker: answer and drop the connection.
        error = ApiError(408, "request_timeout", "request body not received in time")
        error.headers["Connection"] = "close"
        raise error from None
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(max_bytes) from None


def idempotency_key(request: web.Request) -> str:
    """The Idempotency-Key header: required, 1-255 visible ASCII characters."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        raise invalid("Idempotency-Key header is required")
    if not _IDEMPOTENCY_KEY.match(key):
        raise invalid("Idempotency-Key must be 1-255 visible ASCII characters")
    return key


def path_id(request: web.Request, name: str) -> str:
    """A path id: 1-128 characters, no control characters; else 400."""
    return checked_id(request.match_info[name], name)


def checked_id(value: str, name: str) -> str:
    """`value` when it is 1-128 characters with no control characters; else 400."""
    if not 1 <= len(value) <= 128 or _CONTROL.search(value):
        raise invalid(f"{name} must be 1-128 characters with no control characters")
    return value


def decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """The typed body, or 400 invalid_request saying what is wrong."""
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise invalid(describe_decode_error(exc)) from None
    except UnicodeDecodeError:
        raise invalid("body is not valid UTF-8") from None


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=encoder.encode(payload), content_type="application/json"
    )
