"""Who is calling: the client behind a bearer key (and its signature), and the end user's IP."""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Callable, Sequence

from aiohttp import web

from gateway.errors import unauthorized
from gateway.settings import Client
from risk.signing import verify


def _digest(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


class Clients:
    """Bearer-key lookup; keys are compared by digest so lookup time says nothing of a key."""

    def __init__(self, clients: Sequence[Client], clock: Callable[[], float] = time.time) -> None:
        self._by_digest = {_digest(c.api_key): c for c in clients}
        self._clock = clock

    def authenticate(self, request: web.Request) -> Client:
        """The client named by `Authorization: Bearer <api_key>`, or ApiError 401."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized()
        client = self._by_digest.get(_digest(token.strip()))
        if client is None:
            raise unauthorized()
        return client

    def check_signature(self, client: Client, request: web.Request, body: bytes) -> str | None:
        """The request's nonce when the client signs (still to be spent once), else None.

        Raises ApiError 401 for a missing, stale or wrong signature.
        """
        if not client.require_signature:
            return None
        headers = request.headers
        check = verify(
            client.secret,
            request.method,
            request.raw_path,
            headers.get("X-Timestamp"),
            headers.get("X-Nonce"),
            headers.get("X-Signature"),
            body,
            now=self._clock(),
        )
        if not check.ok:
            raise unauthorized(f"request signature rejected: {check.reason}")
        return headers["X-Nonce"]


class ClientIp:
    """The end user's IP: the TCP peer, or the right-most untrusted X-Forwarded-For hop."""

    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        self._trusted = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def __call__(self, request: web.Request) -> str:
        peer = request.remote or "unknown"
        if not self._trusted or not self._is_trusted(peer):
            return peer
        hops = [
            h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
        ]
        hops = [h for h in hops if h]
        # Walk from the right: each trusted hop vouches for the one before it.
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop if _valid_ip(hop) else peer
        return hops[0] if hops and _valid_ip(hops[0]) else peer


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
