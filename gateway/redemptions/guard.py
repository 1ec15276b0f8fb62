"""The redeem guard: block lists, nonce, redeem-route limits, the failed-attempt lockout, and
the challenge passes that lift a `challenge` rule's refusal (gateway/challenges.py).

All but the lists are one `redeem_guard.lua` call in the `{rg}` slot, before any voucher is
looked at. A suspected guesser (at half a rule's threshold) has each attempt counted in that
same call and refunded if the voucher turns out to exist, so its lockout is exact under
concurrency; an identity with few failures is counted after the lookup (`failed`), so honest
bursts are never refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from gateway import challenges, codes
from gateway.errors import ApiError, business, rate_limited
from gateway.list_hits import ListHits
from gateway.models import Caller, RedeemRequest
from gateway.records import Outcome
from gateway.settings import Settings
from gateway.telemetry import metrics
from gateway.timefmt import rfc3339_ms
from gateway.valkey import keys
from gateway.valkey.calls import redis_call
from ratelimit.prefilter import LocalBlocks
from ratelimit.rules import Limit, limit_key
from risk.challenge import PassCheck
from risk.lists import RiskLists
from risk.rules import KINDS, RiskRule, velocity_key
from risk.signing import NONCE_TTL_S, nonce_key_suffix

log = logging.getLogger("gateway.redemptions.guard")


class RedeemGuard:
    """Admits or refuses redeem attempts for one worker; counts and refunds failed ones."""

    def __init__(
        self,
        scripts: Any,
        settings: Settings,
        lists: RiskLists,
        claim_ids: codes.ClaimIds,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._scripts = scripts
        self._claim_ids = claim_ids
        self._lists = lists
        self._clock = clock
        self._limits: list[Limit] = list(settings.limits.get("redeem", []))
        self._rules: list[RiskRule] = [
            r for r in settings.risk_rules if KINDS[r.kind].route == "redeem"
        ]
        self._max_len = settings.redis.stream_max_len
        # The script's trailing arguments: (limit, window ms, group) per limit, then a tuple
        # per rule (the effect a shadow rule has is only its event).
        self._tail: list[Any] = []
        for lim in self._limits:
            self._tail += [lim.limit, lim.window_ms, lim.group]
        for rule in self._rules:
            effect = "shadow" if rule.mode == "shadow" else rule.decision
            self._tail += [rule.id, rule.threshold, rule.window_s * 1000, effect]
        self.prefilter = LocalBlocks()
        self._list_hits = ListHits(scripts, settings.redis.stream_max_len)
        self._passes = challenges.ChallengePasses(settings.clients, clock)

    async def check(self, req: RedeemRequest, caller: Caller, code: str | None) -> list[Any]:
        """Refuse or admit an attempt at `code` (None: malformed, a failure already); returns
        the failures counted provisionally, to hand back to `failed` or `refund`."""
        blocked = self._lists.blocked_by(req.user_id, req.device_id, caller.ip)
        if blocked is not None:
            await self._list_hits.record(
                keys.events(keys.GUARD_TAG), blocked, "", req.user_id, req.device_id, caller
            )
            metrics.redemptions.labels("risk_denied").inc()
            raise business("risk_denied")
        check = self._passes.check(caller, req.user_id, req.device_id) if self._rules else None
        mode = "check" if code else "check_fail"
        return await self._call(mode, req, caller, code, check=check)

    async def failed(self, req: RedeemRequest, caller: Caller, counted: list[Any]) -> None:
        """The code was unknown or foreign: count the failure unless it already was."""
        if not counted:
            await self._call("fail", req, caller, None)

    async def refund(self, req: RedeemRequest, caller: Caller, counted: list[Any]) -> None:
        """The code was real: take back its provisional failure (best effort: a refund that
        cannot reach Redis leaves one failure counted, never changes the answer)."""
        if not counted:
            return
        try:
            await self._call("refund", req, caller, None, counted)
        except ApiError:
            log.warning("failure refund skipped", extra={"request_id": caller.request_id})

    def _keys(self, req: RedeemRequest, caller: Caller) -> tuple[list[str], list[str]]:
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

    async def _call(
        self,
        mode: str,
        req: RedeemRequest,
        caller: Caller,
        code: str | None,
        refund: list[Any] | None = None,
        check: PassCheck | None = None,
    ) -> list[Any]:
        """Run the guard in `mode` (see redeem_guard.lua); returns the failure entries it wrote."""
        now = self._clock()
        limit_keys, rule_keys = self._keys(req, caller)
        if mode.startswith("check"):
            self._check_local(limit_keys, rule_keys, now)
        nonce_key = keys.nonce(
            keys.GUARD_TAG, nonce_key_suffix(caller.client_id, caller.nonce or "-")
        )
        pass_keys = challenges.spend_keys(keys.GUARD_TAG, caller, check)
        now_ms = int(now * 1000)
        outcome, index, retry_ms, fired, retries, written = await redis_call(
            "redeem_guard",
            self._scripts.redeem_guard(
                keys=[nonce_key, keys.events(keys.GUARD_TAG), *limit_keys, *rule_keys, *pass_keys],
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
                    self._claim_ids.of(code) if code else "",
                    1 if pass_keys else 0,
                    *self._tail,
                    *(refund or []),
                ],
            ),
        )
        hits = [self._rules[int(i) - 1] for i in fired]
        for rule in hits:
            metrics.risk_decisions.labels(rule.id, rule.decision, rule.mode).inc()
        outcome, index, retry_ms = int(outcome), int(index), int(retry_ms)
        if mode.startswith("check") and self._rules:
            refusal = RULE_REFUSALS.get(outcome, "")
            challenges.count("redeem", check, refusal, hits)
        if outcome == Outcome.OK:
            return list(written)
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


# The guard's rule refusals (redeem_guard.lua): 6 locked out by a deny rule, 7 challenged.
RULE_REFUSALS: dict[int, str] = {Outcome.DENIED: "deny", Outcome.CHALLENGE: "challenge"}
