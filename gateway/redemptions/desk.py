"""Redemptions: guard, reserve-or-deliver in one atomic step, then (direct recharge) suppliers.

1. `redeem_guard.lua` ({rg} slot): nonce, redeem-route limits, the failed-attempt lockout.
   A suspected guesser (at half a rule's threshold) has each attempt counted in that same call,
   refunded if the voucher turns out to exist, so its lockout is exact under concurrency; an
   identity with few failures is counted after the lookup, so honest bursts are never refused.
2. `redeem.lua` (the voucher's slot): idempotency, owner check, voucher state, then either
   delivers at once (merchant voucher, card secret popped from the pool) or reserves the voucher
   for a supplier call.
3. Direct recharge: the supplier pool tries suppliers by priority. Before each call the
   supplier's id is persisted (`attempt`), so a crash leaves enough for the reconciler to ask
   that supplier what happened; `redeem_settle.lua` then moves the redemption on, only while it
   is still pending, so the live path and the reconciler can never both settle it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway import codes
from gateway.errors import ApiError, business, invalid, rate_limited
from gateway.http.wire import Answer
from gateway.list_hits import ListHits
from gateway.models import Caller, RedeemRequest, RedemptionView, encoder
from gateway.records import IDEMPOTENCY_TTL_S, REFUSALS, SEP, Outcome, fingerprint
from gateway.redemptions.cards import open_card
from gateway.settings import Settings
from gateway.telemetry import metrics
from gateway.timefmt import rfc3339_ms
from gateway.valkey import keys
from gateway.valkey.calls import redis_call
from ratelimit.prefilter import LocalBlocks
from ratelimit.rules import Limit, limit_key
from risk.lists import RiskLists
from risk.rules import KINDS, RiskRule, velocity_key
from risk.signing import NONCE_TTL_S, nonce_key_suffix
from supplier_pool.pool import Delivered, Pending, SupplierPool

log = logging.getLogger("gateway.redemptions.desk")


class Abandoned(Exception):
    """The redemption stopped being pending (settled elsewhere): call no supplier."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedeemDesk:
    """Decides redemptions for one worker and settles direct recharges."""

    def __init__(
        self,
        redis: Any,
        scripts: Any,
        settings: Settings,
        pool: SupplierPool,
        data_key: bytes | None,
        lists: RiskLists | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._pool = pool
        self._lists = lists if lists is not None else RiskLists()
        self._data_key = data_key
        self._clock = clock
        self._limits: list[Limit] = list(settings.limits.get("redeem", []))
        self._rules: list[RiskRule] = [
            r for r in settings.risk_rules if KINDS[r.kind].route == "redeem"
        ]
        self._max_len = settings.redis.stream_max_len
        self._sweep_after_ms = int(settings.redemption.sweep_after_s * 1000)
        self._recheck_ms = int(settings.redemption.reconcile_interval_s * 1000)
        self.prefilter = LocalBlocks()
        self._list_hits = ListHits(scripts, settings.redis.stream_max_len)

    # -- the guard ------------------------------------------------------------------------

    def _guard_keys(self, req: RedeemRequest, caller: Caller) -> tuple[list[str], list[str]]:
        ids = caller.identities(req.user_id, req.device_id)
        limit_keys = [
            keys.scoped(keys.GUARD_TAG, limit_key("redeem", lim, ids[lim.by]))
            for lim in self._limits
        ]
        rule_keys = [
            keys.scoped(keys.GUARD_TAG, velocity_key(r, ids[KINDS[r.kind].per]))
            for r in self._rules
        ]
        return limit_keys, rule_keys

    def _check_local(self, limit_keys: list[str], rule_keys: list[str], now: float) -> None:
        for lim, key in zip(self._limits, limit_keys, strict=True):
            left = self.prefilter.blocked_for(key, now)
            if left > 0:
                metrics.ratelimit_rejections.labels("redeem", lim.by, "local").inc()
                raise rate_limited(left * 1000, lim.limit)
        for key in rule_keys:
            left = self.prefilter.blocked_for(key, now)
            if left > 0:
                metrics.ratelimit_rejections.labels("redeem", "failures", "local").inc()
                raise rate_limited(left * 1000)

    async def _guard(
        self, mode: str, req: RedeemRequest, caller: Caller, refund: list[Any] | None = None
    ) -> list[Any]:
        """Run the guard in `mode` (see redeem_guard.lua); returns the failure entries it wrote
        (a suspected guesser's attempt is counted before its code is looked up)."""
        now = self._clock()
        limit_keys, rule_keys = self._guard_keys(req, caller)
        if mode.startswith("check"):
            self._check_local(limit_keys, rule_keys, now)
        args: list[Any] = []
        for lim in self._limits:
            args += [lim.limit, lim.window_s * 1000]
        for rule in self._rules:
            effect = "shadow" if rule.mode == "shadow" else rule.decision
            args += [rule.id, rule.threshold, rule.window_s * 1000, effect]
        nonce_key = keys.nonce(
            keys.GUARD_TAG, nonce_key_suffix(caller.client_id, caller.nonce or "-")
        )
        now_ms = int(now * 1000)
        outcome, index, retry_ms, fired, retries, written = await redis_call(
            "redeem_guard",
            self._scripts.redeem_guard(
                keys=[nonce_key, keys.events(keys.GUARD_TAG), *limit_keys, *rule_keys],
                args=[
                    now_ms,
                    mode,
                    1 if caller.nonce and mode.startswith("check") else 0,
                    NONCE_TTL_S * 1000,
                    len(self._limits),
                    len(self._rules),
                    rfc3339_ms(now_ms),
                    self._max_len,
                    req.user_id,
                    req.device_id,
                    caller.ip,
                    caller.request_id,
                    caller.client_id,
                    *args,
                    *(refund or []),
                ],
            ),
        )
        for i in fired:
            rule = self._rules[int(i) - 1]
            metrics.risk_decisions.labels(rule.id, rule.decision, rule.mode).inc()
        self._raise_for_guard(
            int(outcome), int(index), int(retry_ms), fired, retries, limit_keys, rule_keys, now
        )
        return list(written)

    def _raise_for_guard(
        self,
        outcome: int,
        index: int,
        retry_ms: int,
        fired: list[Any],
        retries: list[Any],
        limit_keys: list[str],
        rule_keys: list[str],
        now: float,
    ) -> None:
        if outcome == Outcome.OK:
            return
        if outcome == Outcome.NONCE_SPENT:
            raise ApiError(401, "unauthorized", "request signature nonce already used")
        if outcome == Outcome.RATE_LIMITED:
            lim = self._limits[index - 1]
            self.prefilter.block(limit_keys[index - 1], now + retry_ms / 1000)
            metrics.ratelimit_rejections.labels("redeem", lim.by, "redis").inc()
            raise rate_limited(retry_ms, lim.limit)
        if outcome == Outcome.DENIED:
            # Each denying rule's key is remembered for its own retry, never a longer one.
            for i, rule_retry_ms in zip(fired, retries, strict=True):
                if int(rule_retry_ms) > 0:
                    self.prefilter.block(rule_keys[int(i) - 1], now + int(rule_retry_ms) / 1000)
            metrics.ratelimit_rejections.labels("redeem", "failures", "redis").inc()
            raise rate_limited(retry_ms)
        raise business("challenge_required")

    # -- the decision ---------------------------------------------------------------------

    async def redeem(self, req: RedeemRequest, caller: Caller, idem_key: str) -> Answer:
        """One redemption's answer; raises ApiError for every refusal."""
        blocked = self._lists.blocked_by(req.user_id, req.device_id, caller.ip)
        if blocked is not None:
            await self._list_hits.record(
                keys.events(keys.GUARD_TAG), blocked, "", req.user_id, req.device_id, caller
            )
            metrics.redemptions.labels("risk_denied").inc()
            raise business("risk_denied")
        code = codes.normalise_code(req.voucher_code)
        counted = await self._guard("check" if code else "check_fail", req, caller)
        if code is None:
            metrics.redemptions.labels("voucher_not_found").inc()
            raise business("voucher_not_found")
        try:
            answer = await self._redeem(code, req, caller, idem_key)
        except ApiError as error:
            if error.code == "voucher_not_found":
                if not counted:
                    await self._guard("fail", req, caller)
            elif error.code != "unavailable":
                await self._refund(req, caller, counted)
            raise
        await self._refund(req, caller, counted)
        return answer

    async def _refund(self, req: RedeemRequest, caller: Caller, provisional: list[Any]) -> None:
        """The code was real: take back its provisional failure (best effort: a refund that
        cannot reach Redis leaves one failure counted, never changes the answer)."""
        if not provisional:
            return
        try:
            await self._guard("refund", req, caller, provisional)
        except ApiError:
            log.warning("failure refund skipped", extra={"request_id": caller.request_id})

    async def _redeem(self, code: str, req: RedeemRequest, caller: Caller, idem_key: str) -> Answer:
        tag = codes.code_tag(code)
        rid = codes.new_redemption_id(tag)
        now_ms = int(self._clock() * 1000)
        prefix = f"gw:{{{tag}}}:"
        idem = keys.idempotency(tag, "redeem", caller.client_id, idem_key)
        fp = fingerprint(code, req.user_id, req.device_id, req.account or "")
        outcome, a, b = await redis_call(
            "redeem",
            self._scripts.redeem(
                keys=[
                    keys.voucher(tag, code),
                    idem,
                    keys.redemption(tag, rid),
                    keys.events(tag),
                    keys.pending(tag),
                ],
                args=[
                    now_ms,
                    fp,
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
                    prefix,
                    self._sweep_after_ms,
                    code,
                ],
            ),
        )
        outcome = int(outcome)
        if outcome == Outcome.OK:
            metrics.redemptions.labels("delivered").inc()
            return await self.answer(tag, _text(a))
        if outcome == Outcome.RESERVED:
            return await self._recharge(tag, rid, _text(a), _text(b), req.account or "")
        if outcome == Outcome.REPLAY:
            return await self._replay(tag, _text(a))
        return await self._refuse(outcome)

    async def _refuse(self, outcome: int) -> Answer:
        if outcome == Outcome.NOT_FOUND:  # already counted as a failure by the guard
            metrics.redemptions.labels("voucher_not_found").inc()
            raise business("voucher_not_found")
        if outcome == Outcome.KEY_REUSED:
            raise business("idempotency_key_reused")
        if outcome == Outcome.ACCOUNT_MISSING:
            raise invalid("account is required to redeem a direct_recharge benefit")
        code = REFUSALS[Outcome(outcome)]
        metrics.redemptions.labels(code).inc()
        raise business(code)

    async def _replay(self, tag: str, record: str) -> Answer:
        _fp, kind, *rest = record.split(SEP)
        metrics.idempotent_replays.inc()
        if kind == "R":
            answer = await self.answer(tag, rest[0])
            answer.headers["Idempotent-Replayed"] = "true"
            return answer
        error = business(REFUSALS[Outcome(int(rest[0]))], {"Idempotent-Replayed": "true"})
        error.request_id = rest[1]
        raise error

    # -- direct recharge ------------------------------------------------------------------

    async def settle(
        self, tag: str, rid: str, action: str, supplier: str = "", ref: str = "", failure: str = ""
    ) -> str:
        """Move a pending redemption on; returns its status afterwards ('' if unknown)."""
        now_ms = int(self._clock() * 1000)
        status = await redis_call(
            "redeem_settle",
            self._scripts.redeem_settle(
                keys=[keys.redemption(tag, rid), keys.events(tag), keys.pending(tag)],
                args=[
                    action,
                    now_ms,
                    rfc3339_ms(now_ms),
                    f"gw:{{{tag}}}:",
                    supplier,
                    ref,
                    now_ms + self._recheck_ms,
                    self._max_len,
                    failure,
                    rid,
                ],
            ),
        )
        return _text(status)

    async def _recharge(self, tag: str, rid: str, sku: str, suppliers: str, account: str) -> Answer:
        async def before_attempt(supplier_id: str) -> None:
            if await self.settle(tag, rid, "attempt", supplier_id) != "pending":
                raise Abandoned(rid)

        # Bounded well inside the sweep delay: the reconciler never meets a live attempt.
        budget = self._sweep_after_ms / 2000
        try:
            async with asyncio.timeout(budget):
                outcome = await self._pool.deliver(
                    rid, sku, account, suppliers.split(","), before_attempt=before_attempt
                )
        except (TimeoutError, Abandoned):
            outcome = Pending("")
        if isinstance(outcome, Delivered):
            await self.settle(tag, rid, "delivered", outcome.supplier_id, outcome.supplier_ref)
            metrics.redemptions.labels("delivered").inc()
        elif isinstance(outcome, Pending):
            await self.settle(tag, rid, "pending", outcome.supplier_id)
            metrics.redemptions.labels("pending").inc()
        else:
            await self.settle(tag, rid, "release", failure="suppliers_unavailable")
            metrics.redemptions.labels("suppliers_unavailable").inc()
            raise business("suppliers_unavailable", {"Retry-After": "5"})
        return await self.answer(tag, rid)

    # -- reading back ---------------------------------------------------------------------

    async def record(self, tag: str, rid: str) -> dict[str, str]:
        raw = await redis_call("redemption_read", self._redis.hgetall(keys.redemption(tag, rid)))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def answer(self, tag: str, rid: str) -> Answer:
        """The redemption's current state: 200, or 202 while a supplier outcome is pending."""
        fields = await self.record(tag, rid)
        view = self.view(rid, fields)
        return Answer(202 if view.status == "pending" else 200, encoder.encode(view))

    async def get(self, redemption_id: str, client_id: str) -> Answer:
        """GET /v1/redemptions/{id}: the owning client only; anyone else gets 404."""
        tag = codes.redemption_tag(redemption_id)
        fields = await self.record(tag, redemption_id) if tag else {}
        if not fields or fields.get("client") != client_id:
            raise business("redemption_not_found")
        return Answer(200, encoder.encode(self.view(redemption_id, fields)))

    def view(self, rid: str, fields: dict[str, str]) -> RedemptionView:
        kind = fields["kind"]
        delivery: dict[str, Any] = {"kind": kind}
        if kind == "card_secret" and fields.get("card") and self._data_key:
            card_no, secret = open_card(self._data_key, fields["campaign"], fields["card"])
            delivery.update(card_no=card_no, secret=secret)
        elif kind == "direct_recharge":
            if fields.get("supplier"):
                delivery["supplier"] = fields["supplier"]
            if fields.get("supplier_ref"):
                delivery["supplier_ref"] = fields["supplier_ref"]
        return RedemptionView(rid, fields["code"], fields["status"], delivery)
