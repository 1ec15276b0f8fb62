"""The claim decision: local answers first, then one atomic Redis call.

In process, before Redis: a request already in flight with the same Idempotency-Key (409), an
identity the pre-filter knows is over a limit (429), a blocked list entry (403), a campaign whose
sold-out flag is up (409, after one cheap look for a stored idempotency record so a retried
grant still replays). Everything else — idempotency, limits, velocity rules, campaign state,
allowances, stock, the voucher and the outbox event — is `lua/claim.lua`, one FCALL, which
decides the claims on one campaign that are in flight in one loop turn (`batcher.py`), each
claim's keys and arguments laid out as `layout.py` names them.

The voucher code is derived from the client, the campaign and the Idempotency-Key
(`codes.voucher_code_for`), so the voucher record is also the claim's idempotency record: a
grant writes one key, not two.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway import challenges, codes
from gateway.claims.batcher import ClaimBatcher
from gateway.claims.layout import (
    DAILY_OUTCOMES,
    ClaimArgs,
    Head,
    Reply,
    RuleArgs,
    claim_keys,
    outcome_constants,
)
from gateway.errors import ApiError, business, rate_limited, replayed
from gateway.http.wire import Answer
from gateway.list_hits import ListHits
from gateway.models import Caller, ClaimGranted, ClaimRequest, VoucherOut, encoder
from gateway.records import IDEMPOTENCY_TTL_S, REFUSALS, SEP, Outcome, fingerprint
from gateway.settings import Settings
from gateway.telemetry import metrics
from gateway.timefmt import rfc3339_ms
from gateway.valkey import keys
from gateway.valkey.calls import redis_call
from ratelimit.prefilter import LocalBlocks
from ratelimit.rules import Limit, limit_key_prefix
from risk.challenge import SPENT_TTL_S, PassCheck
from risk.lists import RiskLists
from risk.rules import KINDS, RiskRule, velocity_key
from risk.signing import NONCE_TTL_S, nonce_key_suffix

# Claim limits by user or device admitting at most this many hits keep their sliding-window
# log in the claimant's allowance field of the campaign hash (ratelimit/field_window.lua).
FIELD_WINDOW_MAX_HITS = 16
CLAIMANT_FIELDS = {"user": "u", "device": "d"}  # limit dimension -> allowance field kind
# < 1 s, so stock added (or a pause) later is seen within a second. The flag also says
# "come back tomorrow" after a daily_stock_exhausted, for as long but never past the midnight.
SOLD_OUT_FLAG_S = 0.5
RULE_REFUSALS: dict[int, str] = {Outcome.CHALLENGE: "challenge", Outcome.DENIED: "deny"}


KEYRINGS_KEPT = 4096  # campaign ids come from request paths: the cache must stay bounded


@dataclass(frozen=True, slots=True)
class Keyring:
    """A campaign's Redis key names, built once (a claim needs a dozen)."""

    tag: str
    campaign: str
    rejections: str
    events: str
    voucher_prefix: str
    limit_prefixes: tuple[tuple[str, str], ...]  # (identity kind, key prefix) per limit

    @classmethod
    def build(cls, campaign_id: str, limits: list[Limit]) -> Keyring:
        tag = keys.shard_tag(campaign_id)
        return cls(
            tag=tag,
            campaign=keys.campaign(tag, campaign_id),
            rejections=keys.rejections(tag, campaign_id),
            events=keys.events(tag),
            voucher_prefix=keys.voucher(tag, ""),
            limit_prefixes=tuple(
                (lim.by, keys.campaign_scoped(tag, campaign_id, limit_key_prefix("claim", lim)))
                for lim in limits
            ),
        )


def field_windows(limits: list[Limit]) -> dict[str, tuple[int, int]]:
    """The claimant dimensions whose claim limits keep their log in the allowance field.

    By field name (`u` user, `d` device): (most hits kept, longest window ms), the largest
    limit and window of that dimension. A dimension qualifies when each of its limits admits
    at most FIELD_WINDOW_MAX_HITS: the field then holds at most that many timestamps, and the
    claim script reads and writes it anyway, so the limit costs no Redis call.
    """
    windows: dict[str, tuple[int, int]] = {}
    for by, field in CLAIMANT_FIELDS.items():
        mine = [lim for lim in limits if lim.by == by]
        if mine and all(lim.limit <= FIELD_WINDOW_MAX_HITS for lim in mine):
            windows[field] = (max(lim.limit for lim in mine), max(lim.window_ms for lim in mine))
    return windows


def limit_fields(limits: list[Limit]) -> list[str | None]:
    """Per limit, the allowance field kind holding its log (`u`, `d`), or None for a list."""
    in_fields = field_windows(limits)
    return [f if (f := CLAIMANT_FIELDS.get(lim.by)) in in_fields else None for lim in limits]


def claim_script_constants(settings: Settings) -> str:
    """The configuration and outcomes the claim script reads, as Lua in front of it."""
    limits = settings.limits.get("claim", [])
    in_fields = field_windows(limits)
    entries, lists = [], 0
    for lim, field in zip(limits, limit_fields(limits), strict=True):
        if field is None:
            lists += 1
        log = str(lists) if field is None else f"'{field}'"
        entries.append(f"{lim.limit}, {lim.window_ms}, {log}, {lim.group}")
    keep_u, span_u = in_fields.get("u", ("false", "false"))
    keep_d, span_d = in_fields.get("d", ("false", "false"))
    return (
        f"local IDEMPOTENCY_TTL_S, NONCE_TTL_MS = {IDEMPOTENCY_TTL_S}, {NONCE_TTL_S * 1000}\n"
        f"local PASS_TTL_MS = {SPENT_TTL_S * 1000}\n"
        f"local STREAM_MAX_LEN = {settings.redis.stream_max_len}\n"
        f"local LIMITS = {{{', '.join(entries)}}}\n"
        f"local LIST_LOGS = {lists}\n"
        f"local FW_USER_KEEP, FW_USER_SPAN = {keep_u}, {span_u}\n"
        f"local FW_DEVICE_KEEP, FW_DEVICE_SPAN = {keep_d}, {span_d}\n" + outcome_constants()
    )


def until_midnight(code: str, ms: float) -> ApiError:
    """A daily refusal, with Retry-After: the seconds to the next local midnight (at least 1)."""
    error = business(code, {"Retry-After": str(max(1, math.ceil(ms / 1000)))})
    if code == "limit_reached":
        error.message = "this user already has today's allowance; retry after the indicated time"
    return error


class ClaimDesk:
    """Decides claims for one worker; holds the worker's local caches."""

    def __init__(
        self,
        redis: Any,
        scripts: Any,
        settings: Settings,
        lists: RiskLists,
        code_key: bytes,
        claim_ids: codes.ClaimIds,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._code_key = code_key
        self._claim_ids = claim_ids
        self._scripts = scripts
        self._batches = ClaimBatcher(scripts.claim)
        self._lists = lists
        self._clock = clock
        self._limits = list(settings.limits.get("claim", []))
        # The limits whose log is a list key the script is handed (the others are fields).
        self._listed = [i for i, field in enumerate(limit_fields(self._limits)) if field is None]
        self._rules: list[RiskRule] = [
            r for r in settings.risk_rules if KINDS[r.kind].route == "claim"
        ]
        self._keyrings: dict[str, Keyring] = {}
        # campaign -> (flag up until, the next local midnight for a daily one, else 0)
        self._soldout_until: dict[str, tuple[float, float]] = {}
        self._in_flight: set[tuple[str, str]] = set()
        self.prefilter = LocalBlocks()
        self._list_hits = ListHits(scripts, settings.redis.stream_max_len)
        self._passes = challenges.ChallengePasses(settings.clients, clock)

    async def decide(
        self, campaign_id: str, req: ClaimRequest, caller: Caller, idem_key: str
    ) -> Answer:
        """One claim's answer; raises ApiError for every non-201 outcome."""
        flight = (caller.client_id, campaign_id + SEP + idem_key)
        if flight in self._in_flight:
            raise business("request_in_progress")
        self._in_flight.add(flight)
        try:
            return await self._decide(campaign_id, req, caller, idem_key)
        finally:
            self._in_flight.discard(flight)

    def _keyring(self, campaign_id: str) -> Keyring:
        ring = self._keyrings.get(campaign_id)
        if ring is None:
            if len(self._keyrings) >= KEYRINGS_KEPT:
                self._keyrings.clear()
            ring = self._keyrings[campaign_id] = Keyring.build(campaign_id, self._limits)
        return ring

    async def _decide(
        self, campaign_id: str, req: ClaimRequest, caller: Caller, idem_key: str
    ) -> Answer:
        now = self._clock()
        ring = self._keyring(campaign_id)
        tag = ring.tag
        # Both ids passed the request schema (1-128 characters, no control characters).
        ids = caller.identities(req.user_id, req.device_id)
        limit_keys = [prefix + ids[by] for by, prefix in ring.limit_prefixes]
        blocked = self._check_local(req, caller, limit_keys, now)
        if blocked is not None:
            await self._list_hits.record(
                ring.events, blocked, campaign_id, req.user_id, req.device_id, caller
            )
            metrics.claims.labels("risk_denied").inc()
            raise business("risk_denied")
        code = codes.voucher_code_for(tag, self._code_key, caller.client_id, campaign_id, idem_key)
        voucher_key = ring.voucher_prefix + code
        await self._raise_if_sold_out(campaign_id, voucher_key, now)

        claim_id = self._claim_ids.of(code)
        request_fp = fingerprint(campaign_id, req.user_id, req.device_id)
        rules = [] if not self._rules or self._lists.is_allowed(req.user_id) else self._rules
        rule_keys, rule_args = self._rule_args(tag, campaign_id, ids, rules) if rules else ([], [])
        nonce_keys = (
            [keys.nonce(tag, nonce_key_suffix(caller.client_id, caller.nonce))]
            if caller.nonce
            else []
        )
        # A challenge pass matters only where a rule may challenge: it is spent by the call.
        check = self._passes.check(caller, req.user_id, req.device_id) if rules else None
        pass_keys = challenges.spend_keys(tag, caller, check)
        now_ms = int(now * 1000)
        claim = ClaimArgs(
            fp=request_fp,
            claim_id=claim_id,
            masked_code=codes.mask_code(code),
            user_id=req.user_id,
            device_id=req.device_id,
            ip=caller.ip,
            request_id=caller.request_id,
            user_field=keys.allowance_field("u", req.user_id),
            device_field=keys.allowance_field("d", req.device_id),
        )
        # Claims of one shape in this loop turn go in one call, led by the campaign's keys and
        # the first claim's clock.
        shape = (campaign_id, caller.client_id, len(rules), len(nonce_keys), len(pass_keys))
        decided = self._batches.submit(
            shape,
            (ring.campaign, ring.rejections, ring.events),
            Head(now_ms, rfc3339_ms(now_ms), campaign_id, caller.client_id, *shape[2:]),
            claim_keys(
                voucher_key, [limit_keys[i] for i in self._listed], rule_keys, nonce_keys, pass_keys
            ),
            [*claim, *rule_args] if rule_args else claim,
        )
        result = await redis_call("claim", decided)
        return self._answer(
            result, campaign_id, req, code, claim_id, request_fp, limit_keys, rules, check, now
        )

    def _check_local(
        self, req: ClaimRequest, caller: Caller, limit_keys: list[str], now: float
    ) -> str | None:
        """Raise the pre-filter's 429; return the block list the request is on, if any."""
        for lim, key in zip(self._limits, limit_keys, strict=True):
            left = self.prefilter.blocked_for(key, now)
            if left > 0:
                metrics.ratelimit_rejections.labels("claim", lim.by, "local").inc()
                metrics.claims.labels("rate_limited").inc()
                raise rate_limited(left * 1000, lim.limit)
        return self._lists.blocked_by(req.user_id, req.device_id, caller.ip)

    async def _raise_if_sold_out(self, campaign_id: str, voucher_key: str, now: float) -> None:
        """Raise the sold-out (or daily stock exhausted) answer the campaign's flag gives, if up.

        The error is raised where it is made, never held in a local: a frame naming its own
        exception is a reference cycle, and at sold-out rates those cycles kept the collector
        busy.
        """
        flag = self._soldout_until.get(campaign_id)
        if flag is None:
            return
        until, midnight = flag
        if until <= now:
            del self._soldout_until[campaign_id]
            return
        # A retried grant must still replay: only a key never seen is answered from memory.
        probe = self._scripts.execute("EXISTS", voucher_key)
        if await redis_call("claim_idem_probe", probe):
            return
        metrics.soldout_local.inc()
        if midnight:
            metrics.claims.labels("daily_stock_exhausted").inc()
            raise until_midnight("daily_stock_exhausted", (midnight - now) * 1000)
        metrics.claims.labels("sold_out").inc()
        raise business("sold_out")

    def _rule_args(
        self,
        tag: str,
        campaign_id: str,
        ids: dict[str, str],
        rules: list[RiskRule],
    ) -> tuple[list[str], list[Any]]:
        rule_keys: list[str] = []
        args: list[Any] = []  # a RuleArgs per rule
        for rule in rules:
            kind = KINDS[rule.kind]
            suffix = velocity_key(rule, ids[kind.per])
            rule_keys.append(keys.campaign_scoped(tag, campaign_id, suffix))
            counting = "distinct" if kind.counts == "distinct" else "count"
            member = ids[kind.member] if kind.member else ""
            effect = "shadow" if rule.mode == "shadow" else rule.decision
            args += RuleArgs(
                rule.id, counting, rule.threshold, rule.window_s * 1000, member, effect
            )
        return rule_keys, args

    def _answer(
        self,
        reply: Reply,
        campaign_id: str,
        req: ClaimRequest,
        code: str,
        claim_id: str,
        request_fp: str,
        limit_keys: list[str],
        rules: list[RiskRule],
        check: PassCheck | None,
        now: float,
    ) -> Answer:
        outcome = int(reply.outcome)
        fired = [rules[int(i) - 1] for i in reply.fired.split(b",")] if reply.fired else []
        for rule in fired:
            metrics.risk_decisions.labels(rule.id, rule.decision, rule.mode).inc()
        if rules:
            challenges.count("claim", check, RULE_REFUSALS.get(outcome, ""), fired)
        if outcome == Outcome.OK:
            metrics.claims.labels("granted").inc()
            metrics.stock_left.labels(campaign_id).set(int(reply.b))
            return self._granted(campaign_id, req.user_id, code, claim_id, int(reply.a))
        if outcome == Outcome.REPLAY:
            return self._replay(campaign_id, req.user_id, code, request_fp, reply.a)
        if outcome == Outcome.RATE_LIMITED:
            limit_index, retry_ms = int(reply.a) - 1, int(reply.b)
            lim = self._limits[limit_index]
            self.prefilter.block(limit_keys[limit_index], now + retry_ms / 1000)
            metrics.ratelimit_rejections.labels("claim", lim.by, "redis").inc()
            metrics.claims.labels("rate_limited").inc()
            raise rate_limited(retry_ms, lim.limit)
        # Raised as made, never held in a local of this frame: see _raise_if_sold_out.
        raise self._refusal(outcome, int(reply.b), campaign_id, now)

    def _refusal(self, outcome: int, b: int, campaign_id: str, now: float) -> ApiError:
        """The error for a refused claim; raises the campaign's sold-out flag where it applies."""
        if outcome in DAILY_OUTCOMES:
            error = until_midnight(REFUSALS[Outcome(outcome)], b)
            if outcome == Outcome.DAILY_STOCK_EXHAUSTED:
                midnight = now + b / 1000
                self._soldout_until[campaign_id] = (min(now + SOLD_OUT_FLAG_S, midnight), midnight)
        else:
            error = self._rejection(outcome)
        if error.code == "sold_out":
            self._soldout_until[campaign_id] = (now + SOLD_OUT_FLAG_S, 0.0)
        metrics.claims.labels(error.code).inc()
        return error

    @staticmethod
    def _rejection(outcome: int) -> ApiError:
        if outcome == Outcome.NONCE_SPENT:
            return ApiError(401, "unauthorized", "request signature nonce already used")
        if outcome == Outcome.NOT_FOUND:
            return business("campaign_not_found")
        return business(REFUSALS[Outcome(outcome)])

    @staticmethod
    def _granted(
        campaign_id: str, user_id: str, code: str, claim_id: str, expires_ms: int
    ) -> Answer:
        body = ClaimGranted(
            claim_id=claim_id,
            campaign_id=campaign_id,
            user_id=user_id,
            voucher=VoucherOut(code=code, expires_at=rfc3339_ms(expires_ms)),
        )
        return Answer(201, encoder.encode(body))

    def _replay(
        self, campaign_id: str, user_id: str, code: str, request_fp: str, record: bytes | str
    ) -> Answer:
        """The stored answer of the claim whose voucher key holds `record` (lua/claim.lua)."""
        text = record.decode() if isinstance(record, bytes) else record
        # A voucher: state, expiry, campaign, owner, fp[, redemption id], whatever its state
        # since. A stored refusal: 'x', outcome, campaign, request id, fp.
        state, value, _campaign, who, stored_fp, *_ = text.split(SEP)
        if stored_fp != request_fp:
            raise business("idempotency_key_reused")
        metrics.idempotent_replays.inc()
        if state != "x":
            answer = self._granted(campaign_id, user_id, code, self._claim_ids.of(code), int(value))
            answer.headers["Idempotent-Replayed"] = "true"
            return answer
        raise replayed(REFUSALS[Outcome(int(value))], who)
