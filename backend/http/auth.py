"""Bearer tokens: admin users (any role may read the backend; changes are for `admin`s) and
client apps (the wallet)."""

from __future__ import annotations

import hmac

from aiohttp import web

from backend.http.envelope import ApiError
from gateway.settings import Settings


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "missing bearer token")
    return token.strip()


def _match(token: str, candidates: list[tuple[str, str]]) -> str | None:
    found = None
    for secret, name in candidates:  # no early exit: timing says nothing of which matched
        if secret and hmac.compare_digest(secret.encode(), token.encode()):
            found = name
    return found


class Tokens:
    """Built once from the settings, checked per request."""

    def __init__(self, settings: Settings) -> None:
        self._operators = [(u.token, u.name) for u in settings.admin.operators]
        self._roles = {u.name: u.role for u in settings.admin.operators}
        self._clients = [(c.api_key, c.id) for c in settings.clients]

    def operator(self, request: web.Request) -> str:
        """The admin user's name; 401 unauthorized for anything else."""
        name = _match(_bearer(request), self._operators)
        if name is None:
            raise ApiError(401, "unauthorized", "unknown admin token")
        return name

    def admin(self, request: web.Request) -> tuple[str, str]:
        """An `admin` user's name and token (the token goes on to the gateway, which checks
        it again); 401 unauthorized for unknown tokens, 403 forbidden for other roles."""
        name = self.operator(request)
        if self._roles.get(name) != "admin":
            raise ApiError(403, "forbidden", "this admin user's role may not do this")
        return name, _bearer(request)

    def client(self, request: web.Request) -> str:
        """The client app's id; 401 unauthorized for anything else."""
        client_id = _match(_bearer(request), self._clients)
        if client_id is None:
            raise ApiError(401, "unauthorized", "unknown api key")
        return client_id
