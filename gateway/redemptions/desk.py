"""Redemptions: the guard, then reserve-or-deliver in one atomic step, then the answer.

`redeem.lua` (the voucher's slot) checks idempotency, the owner and the voucher's state, then
either delivers at once (merchant voucher, card secret popped from the pool) or reserves the
voucher for a direct recharge or a link from the suppliers (recharge.py). The guard
(guard.py) runs before the lookup.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gateway import codes
from gateway.errors import ApiError, business, invalid, replayed
from gateway.http.wire import Answer
from gateway.models import Caller, RedeemRequest, RedemptionView, encoder
from gateway.records import IDEMPOTENCY_TTL_S, REFUSALS, SEP, Outcome, fingerprint
from gateway.redemptions.cards import open_card, open_link
from gateway.redemptions.guard import RedeemGuard
from gateway.redemptions.recharge import DirectRecharge, text
from gateway.settings import Settings
from gateway.telemetry import metrics
from gateway.timefmt import rfc3339_ms
from gateway.valkey import keys
from gateway.valkey.calls import redis_call
from risk.lists import RiskLists
from supplier_pool.pool import SupplierPool


class RedeemDesk:
    """Decides redemptions for one worker and answers for them."""

    def __init__(
        self,
        redis: Any,
        scripts: Any,
        settings: Settings,
        pool: SupplierPool,
        data_key: bytes | None,
        claim_ids: codes.ClaimIds,
        lists: RiskLists | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._scripts = scripts
        self._claim_ids = claim_ids
        self._data_key = data_key
        self._clock = clock
        self._max_len = settings.redis.stream_max_len
        self._sweep_after_ms = int(settings.redemption.sweep_after_s * 1000)
        lists = lists if lists is not None else RiskLists()
        self.guard = RedeemGuard(scripts, settings, lists, claim_ids, clock)
        self.recharge = DirectRecharge(redis, scripts, settings, pool, claim_ids, data_key, clock)

    async def redeem(self, req: RedeemRequest, caller: Caller, idem_key: str) -> Answer:
        """One redemption's answer; raises ApiError for every refusal."""
        code = codes.normalise_code(req.voucher_code)
        counted = await self.guard.check(req, caller, code)
        if code is None:
            metrics.redemptions.labels("voucher_not_found").inc()
            raise business("voucher_not_found")
        try:
            answer = await self._redeem(code, req, caller, idem_key)
        except ApiError as error:
            if error.code == "voucher_not_found":
                await self.guard.failed(req, caller, counted)
            elif error.code != "unavailable":
                await self.guard.refund(req, caller, counted)
            raise
        await self.guard.refund(req, caller, counted)
        return answer

    async def _redeem(self, code: str, req: RedeemRequest, caller: Caller, idem_key: str) -> Answer:
        tag = codes.code_tag(code)
        rid = codes.new_redemption_id(tag)
        now_ms = int(self._clock() * 1000)
        outcome, a, b = await redis_call(
            "redeem",
            self._scripts.redeem(
                keys=[
                    keys.voucher(tag, code),
                    keys.idempotency(tag, "redeem", caller.client_id, idem_key),
                    keys.redemption(tag, rid),
                    keys.events(tag),
                    keys.pending(tag),
                ],
                args=[
                    now_ms,
                    fingerprint(code, req.user_id, req.device_id, req.account or ""),
                    rid,
                    codes.mask_code(code),
                    req.user_id,
                    req.device_id,
                    caller.ip,
                    caller.request_id,
                    caller.client_id,
                    IDEMPOTENCY_TTL_S,
                    req.account or "",
                    rfc3339_ms(now_ms),
                    self._max_len,
                    keys.campaign(tag, ""),
                    self._sweep_after_ms,
                    code,
                    keys.card_pool(tag, ""),
                    self._claim_ids.of(code),
                ],
            ),
        )
        outcome = int(outcome)
        if outcome == Outcome.OK:
            metrics.redemptions.labels("delivered").inc()
            # Delivered in that one call: its answer needs no read of the record it wrote.
            kind, campaign_id = text(a).split(SEP)
            fields = {"kind": kind, "campaign": campaign_id, "card": text(b), "code": code}
            view = self.view(rid, fields | {"status": "delivered"})
            return Answer(200, encoder.encode(view))
        if outcome == Outcome.RESERVED:
            await self.recharge.deliver(tag, rid, code, text(a), text(b), req.account or "")
            return await self.answer(tag, rid)
        if outcome == Outcome.REPLAY:
            return await self._replay(tag, text(a))
        raise self._refusal(outcome)

    def _refusal(self, outcome: int) -> ApiError:
        if outcome == Outcome.NOT_FOUND:  # counted as a failure by the guard
            metrics.redemptions.labels("voucher_not_found").inc()
            return business("voucher_not_found")
        if outcome == Outcome.KEY_REUSED:
            return business("idempotency_key_reused")
        if outcome == Outcome.ACCOUNT_MISSING:
            return invalid("account is required to redeem a direct_recharge benefit")
        code = REFUSALS[Outcome(outcome)]
        metrics.redemptions.labels(code).inc()
        return business(code)

    async def _replay(self, tag: str, record: str) -> Answer:
        _fp, kind, *rest = record.split(SEP)
        metrics.idempotent_replays.inc()
        if kind == "R":
            answer = await self.answer(tag, rest[0])
            answer.headers["Idempotent-Replayed"] = "true"
            return answer
        raise replayed(REFUSALS[Outcome(int(rest[0]))], rest[1])

    async def answer(self, tag: str, rid: str) -> Answer:
        """The redemption's current state: 200, or 202 while a supplier outcome is pending."""
        view = self.view(rid, await self.recharge.record(tag, rid))
        return Answer(202 if view.status == "pending" else 200, encoder.encode(view))

    async def get(self, redemption_id: str, client_id: str) -> Answer:
        """GET /v1/redemptions/{id}: the owning client only; anyone else gets 404."""
        tag = codes.redemption_tag(redemption_id)
        fields = await self.recharge.record(tag, redemption_id) if tag else {}
        if not fields or fields.get("client") != client_id:
            raise business("redemption_not_found")
        return Answer(200, encoder.encode(self.view(redemption_id, fields)))

    def view(self, rid: str, fields: dict[str, str]) -> RedemptionView:
        kind = fields["kind"]
        delivery: dict[str, Any] = {"kind": kind}
        if kind == "card_secret" and fields.get("card") and self._data_key:
            card_no, secret = open_card(self._data_key, fields["campaign"], fields["card"])
            delivery.update(card_no=card_no, secret=secret)
        elif kind in ("direct_recharge", "link"):
            if fields.get("supplier"):
                delivery["supplier"] = fields["supplier"]
            if fields.get("supplier_ref"):
                delivery["supplier_ref"] = fields["supplier_ref"]
            if kind == "link" and fields.get("link") and self._data_key:
                delivery["url"] = open_link(self._data_key, rid, fields["link"])
        return RedemptionView(rid, fields["code"], fields["status"], delivery)
