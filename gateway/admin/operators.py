"""Who is acting on the admin API: the named admin user behind a bearer token, and its role.

Roles are ranked (SPEC 4): `viewer` reads, `operator` also runs campaigns (stock, pause and
resume, card secrets, voucher freezes), `admin` may do everything. The route table in
routes.py names the least role each route needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

from aiohttp import web

from gateway.errors import business, unauthorized
from gateway.settings import AdminUser, Role

RANK: dict[Role, int] = {"viewer": 0, "operator": 1, "admin": 2}


class Actor(NamedTuple):
    """The admin user making a request, and the address it acts from (events name both)."""

    name: str
    role: Role
    ip: str

    def may(self, needed: Role) -> bool:
        return RANK[self.role] >= RANK[needed]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Operators:
    """Bearer-token lookup; tokens are compared by digest so lookup time says nothing of one."""

    def __init__(self, users: Sequence[AdminUser]) -> None:
        self._by_digest = {_digest(u.token): u for u in users}

    def authenticate(self, request: web.Request) -> AdminUser:
        """The admin user named by `Authorization: Bearer <token>`, or ApiError 401."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        user = None
        if scheme.lower() == "bearer" and token.strip():
            user = self._by_digest.get(_digest(token.strip()))
        if user is None:
            raise unauthorized("missing or wrong admin token")
        return user


def require(actor: Actor, needed: Role) -> None:
    """ApiError 403 `forbidden` unless the actor's role reaches `needed`."""
    if not actor.may(needed):
        raise business("forbidden")
