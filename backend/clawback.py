"""Claw-back (SPEC §10): revoke every unredeemed voucher of one user, device or address.

The ledger knows each voucher by owner, device and address, and by its claim id, which the
data key turns back into the code (gateway/codes.py ClaimIds). Each voucher is revoked by the
gateway's own `POST /admin/vouchers/{code}/revoke`, called with the caller's bearer token: the
gateway checks the role again, decides each revoke in its one atomic script, and names the
actor in every `voucher.revoked` event. The backend never writes the gateway's Valkey state.

Which vouchers are sent: every voucher of the identity (and campaign) the ledger holds, except
those it knows are redeemed (counted `redeemed`) or expired unused (counted `expired`:
an expired voucher can no longer be used, and revoking it would hand back a unit that expiry
keeps). Already revoked ones are sent too: the gateway answers a revoke again as it did the
first time, so a second identical claw-back answers the same counts (a voucher that expires
between the two, before the ledger saw its revoke, moves to `expired`). If the gateway stops
answering, what was revoked stays revoked and the call answers 503; a retry finishes the rest.

The act itself is an `admin.claw_back` event on the gateway's admin stream, which the ledger
ingests like every other event: one path into the ledger, exactly once, and `events tail`
shows it too. It carries the actor, the identity, the request and the counts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import quote

import aiohttp
import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.schema import vouchers
from gateway.codes import ClaimIds
from gateway.settings import Settings
from gateway.timefmt import rfc3339_ms
from gateway.valkey import keys

log = logging.getLogger("backend.clawback")

CONCURRENCY = 8  # revokes in flight at once: a claw-back must not crowd out a flash sale
CALL_TIMEOUT_S = 10.0
IDENTITIES = ("user_id", "device_id", "ip")
# The gateway's 409 answers, by the count they go to.
REFUSED = {
    "voucher_redeemed": "redeemed",
    "redemption_pending": "pending",
    "voucher_expired": "expired",
}
UNUSED = ("issued", "frozen")  # the ledger's states in which a voucher can lapse unused
COUNTS = ("matched", "revoked", "returned", "redeemed", "pending", "expired", "failed")

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]


class ClawBackRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user_id: Id | None = None
    device_id: Id | None = None
    ip: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\x00-\x20\x7f]+$")]
        | None
    ) = None
    campaign_id: Id | None = None
    return_stock: bool = True
    # The gateway keeps 512 characters of a revoke's reason; "claw-back: " leads it.
    reason: Annotated[str, msgspec.Meta(max_length=500)] = ""

    def identity(self) -> tuple[str, str]:
        """The one identity field given, as (name, value); ValueError unless exactly one."""
        given = [(name, getattr(self, name)) for name in IDENTITIES if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(f"exactly one of {', '.join(IDENTITIES)}")
        name, value = given[0]
        return name, value


request_decoder = msgspec.json.Decoder(ClawBackRequest)


class Unavailable(Exception):
    """The gateway did not answer (or answered 503): the claw-back stopped where it was."""


class Outcome:
    """A claw-back's counts (COUNTS) and its failures by the gateway's error code."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(COUNTS, 0)
        self.failures: dict[str, int] = {}

    def fail(self, code: str) -> None:
        self.counts["failed"] += 1
        self.failures[code] = self.failures.get(code, 0) + 1

    def answered(self, answer: str | None) -> None:
        """Count one revoke's answer (ClawBacks._revoke)."""
        if answer is None or answer == "returned":
            self.counts["revoked"] += 1
            self.counts["returned"] += answer == "returned"
        elif answer in REFUSED:
            self.counts[REFUSED[answer]] += 1
        else:
            self.fail(answer)

    def document(self) -> dict[str, Any]:
        return {**self.counts, "failures": dict(sorted(self.failures.items()))}


def gateway_admin_url(settings: Settings) -> str:
    """`backend.gateway_url`, else the admin port on server.host (loopback for a wildcard)."""
    if settings.backend.gateway_url:
        return settings.backend.gateway_url.rstrip("/")
    host = settings.server.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.server.admin_port}"


class ClawBacks:
    """Built once per backend app; `run` is one claw-back."""

    def __init__(
        self,
        engine: AsyncEngine,
        redis: Any,
        claim_ids: ClaimIds,
        gateway_url: str,
        stream_max_len: int,
    ) -> None:
        self._engine = engine
        self._redis = redis
        self._claim_ids = claim_ids
        self._url = gateway_url
        self._max_len = stream_max_len
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def run(
        self, req: ClawBackRequest, actor: str, token: str, actor_ip: str, now_ms: int
    ) -> Outcome:
        """Revoke what the ledger holds of the identity; raises Unavailable if the gateway
        stops answering (or the act cannot be recorded), after recording how far it got."""
        name, value = req.identity()
        outcome = Outcome()
        codes = self._to_send(await self._vouchers(name, value, req.campaign_id), outcome, now_ms)
        body = {"return_stock": req.return_stock, "reason": f"claw-back: {req.reason}"}
        headers = {"Authorization": f"Bearer {token}"}
        if actor_ip:
            headers["X-Forwarded-For"] = actor_ip
        stopped: list[str] = []

        async def revoker(queue: Iterator[str]) -> None:
            for code in queue:
                try:
                    outcome.answered(await self._revoke(code, body, headers))
                except Unavailable as exc:
                    stopped.append(str(exc))
                if stopped:
                    return

        queue = iter(codes)
        await asyncio.gather(*(revoker(queue) for _ in range(min(CONCURRENCY, len(codes)))))
        result = "unavailable" if stopped else "done"
        recorded = await self._record(req, name, value, actor, actor_ip, now_ms, outcome, result)
        if stopped:
            raise Unavailable(f"the gateway did not answer: {stopped[0]}")
        if not recorded:
            raise Unavailable("the claw-back is done but could not be recorded: Valkey is down")
        return outcome

    def _to_send(
        self, rows: list[tuple[str | None, str, int | None]], outcome: Outcome, now_ms: int
    ) -> list[str]:
        """The codes to revoke; the rest of the rows counted as they stand."""
        outcome.counts["matched"] = len(rows)
        codes: list[str] = []
        for claim_id, state, expires_ms in rows:
            if state == "redeemed":
                outcome.counts["redeemed"] += 1
                continue
            if state in UNUSED and expires_ms is not None and expires_ms <= now_ms:
                outcome.counts["expired"] += 1
                continue
            code = self._claim_ids.code_of(claim_id or "")
            if code is None:  # an id from before claim ids were codes, or another key's
                outcome.fail("claim_id_unreadable")
            else:
                codes.append(code)
        return codes

    async def _vouchers(
        self, name: str, value: str, campaign_id: str | None
    ) -> list[tuple[str | None, str, int | None]]:
        column = vouchers.c[name]
        query = select(vouchers.c.claim_id, vouchers.c.state, vouchers.c.expires_ms).where(
            column == value
        )
        if campaign_id is not None:
            query = query.where(vouchers.c.campaign_id == campaign_id)
        async with self._engine.connect() as connection:
            rows = await connection.execute(query.order_by(vouchers.c.vkey))
            return [(row.claim_id, row.state, row.expires_ms) for row in rows]

    async def _revoke(self, code: str, body: dict[str, Any], headers: dict[str, str]) -> str | None:
        """None: revoked now or before without its unit back; "returned": with it; else the
        gateway's error code. Raises Unavailable when the gateway does not answer."""
        url = f"{self._url}/admin/vouchers/{quote(code)}/revoke"
        try:
            async with self._client().post(url, json=body, headers=headers) as response:
                status = response.status
                try:
                    document = await response.json(content_type=None)
                except ValueError:
                    document = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(str(exc) or type(exc).__name__) from None
        if status == 200 and isinstance(document, dict):
            return "returned" if document.get("returned") else None
        error = document.get("error") if isinstance(document, dict) else None
        code_name = error.get("code") if isinstance(error, dict) else None
        if status == 503 or (status >= 500 and code_name is None):
            raise Unavailable(f"HTTP {status}")
        return str(code_name or f"http_{status}")

    async def _record(
        self,
        req: ClawBackRequest,
        name: str,
        value: str,
        actor: str,
        actor_ip: str,
        now_ms: int,
        outcome: Outcome,
        result: str,
    ) -> bool:
        """The act, as an event on the admin stream; False when Valkey did not take it."""
        event = {
            "type": "admin.claw_back",
            "ts": rfc3339_ms(now_ms),
            "actor": actor,
            "actor_ip": actor_ip,
            name: value,
            "return_stock": "true" if req.return_stock else "false",
            "reason": req.reason,
            "result": result,
            **{count: str(n) for count, n in outcome.counts.items()},
            "failures": json.dumps(outcome.document()["failures"]),
        }
        if req.campaign_id is not None:
            event["campaign_id"] = req.campaign_id
        try:
            await self._redis.xadd(keys.ADMIN_EVENTS, event, maxlen=self._max_len, approximate=True)
            await self._redis.sadd(keys.EVENT_STREAMS, keys.ADMIN_EVENTS)
        except Exception:  # any client error: the act happened, its record did not
            log.exception("claw-back not recorded", extra={"actor": actor, name: value})
            return False
        return True
