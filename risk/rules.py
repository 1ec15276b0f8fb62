"""Velocity rules as plain values, the kinds they can watch, and the pure decision over hits.

A rule counts something per identity over a sliding window and fires when the count including
the current request (or the current new distinct member) would exceed `threshold`, the most
allowed: with threshold 50 failed redemptions, the 51st attempt after 50 failures is refused.
Counting kinds use ratelimit's sw_peek/sw_record (fires iff count >= threshold); distinct kinds
use velocity.lua (fires iff the member is new and count >= threshold). The gateway composes
both into its one atomic call; this module knows nothing of Redis.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Final, Literal

import msgspec

Outcome = Literal["allow", "deny", "challenge"]
Identity = Literal["ip", "device", "user"]


class Kind(msgspec.Struct, frozen=True):
    """What a rule kind watches: route, the identity it counts per, what it counts."""

    description: str
    route: Literal["claim", "redeem"]
    per: Identity
    counts: Literal["attempts", "failures", "distinct"]
    member: Identity | None = None  # for "distinct": the identity whose distinct values count


# Add a kind here (and teach the gateway's script to feed it) to extend the rule set.
KINDS: Final[dict[str, Kind]] = {
    "claims_per_ip": Kind("claim attempts per IP", "claim", "ip", "attempts"),
    "distinct_users_per_device": Kind(
        "distinct users claiming from one device", "claim", "device", "distinct", "user"
    ),
    "distinct_devices_per_user": Kind(
        "distinct devices one user claims from", "claim", "user", "distinct", "device"
    ),
    "failed_redemptions_per_ip": Kind(
        "failed redemptions (unknown, foreign or invalid codes) per IP", "redeem", "ip", "failures"
    ),
    "failed_redemptions_per_device": Kind(
        "failed redemptions (unknown, foreign or invalid codes) per device",
        "redeem",
        "device",
        "failures",
    ),
}

RULE_ID_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,64}$"  # no ':' so velocity keys stay unambiguous
DEFAULT_ID_PREFIX: Final = "default_"


class RiskConfigError(ValueError):
    """A risk rule list is invalid; the message names the key path."""


class RiskRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Fire `decision` when more than `threshold` would be counted within `window_s` seconds."""

    id: Annotated[str, msgspec.Meta(pattern=RULE_ID_PATTERN)]
    kind: str
    threshold: Annotated[int, msgspec.Meta(ge=1)]
    window_s: Annotated[int, msgspec.Meta(ge=1)]
    decision: Literal["deny", "challenge"] = "deny"
    mode: Literal["enforce", "shadow"] = "enforce"

    @property
    def window_ms(self) -> int:
        """The window in milliseconds, the unit the Lua functions take."""
        return self.window_s * 1000


class RuleHit(msgspec.Struct, frozen=True):
    """One rule evaluated for one request: whether it fired."""

    rule: RiskRule
    fired: bool


class Decision(msgspec.Struct, frozen=True):
    """The outcome for a request and every rule that fired, shadow ones included."""

    outcome: Outcome
    fired: tuple[RiskRule, ...] = ()


def default_rules() -> list[RiskRule]:
    """Return the SPEC §6 safe defaults: > 50 failed redemptions per IP or device in 10 min."""
    return [
        RiskRule(f"{DEFAULT_ID_PREFIX}{kind}", kind, threshold=50, window_s=600)
        for kind in ("failed_redemptions_per_ip", "failed_redemptions_per_device")
    ]


def merge_rules(configured: Iterable[RiskRule]) -> list[RiskRule]:
    """Return the defaults whose kind no configured rule has, then every configured rule."""
    configured = list(configured)
    kinds = {rule.kind for rule in configured}
    return [rule for rule in default_rules() if rule.kind not in kinds] + configured


def fires(rule: RiskRule, count: int, *, is_new: bool = True) -> bool:
    """Return whether `rule` fires when `count` are already in its window (before this one).

    For distinct kinds pass `is_new`: a member already in the window adds nothing.
    """
    return is_new and count + 1 > rule.threshold


def velocity_key(rule: RiskRule, identity: str) -> str:
    """Return the key suffix `rv:<rule id>:<identity>` of a rule's window for one identity.

    Keyed by rule id (colon-free) so two rules of one kind never record into one log twice.
    """
    return f"rv:{rule.id}:{identity}"


def assess(hits: Sequence[RuleHit]) -> Decision:
    """Decide: an enforced deny beats an enforced challenge beats allow; shadow never blocks."""
    fired = tuple(hit.rule for hit in hits if hit.fired)
    enforced = {rule.decision for rule in fired if rule.mode == "enforce"}
    for outcome in ("deny", "challenge"):
        if outcome in enforced:
            return Decision(outcome, fired)
    return Decision("allow", fired)


def validate_rules(raw: Any, *, path: str = "risk.rules") -> list[RiskRule]:
    """Return the rules decoded from `raw` (TOML data or RiskRules), or raise RiskConfigError.

    Checks each rule's fields, that its kind is known, that ids are unique, and that an id of
    a default is only reused by a rule of that default's kind (which then replaces it).
    """
    if not isinstance(raw, list):
        raise RiskConfigError(f"{path} must be a list of rules")
    rules: list[RiskRule] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(raw):
        where = f"{path}[{index}]"
        rule = _convert(item, where)
        _check_kind(rule, where)
        first = first_index.setdefault(rule.id, index)
        if first != index:
            raise RiskConfigError(f"{where}.id: duplicate id '{rule.id}' (also {path}[{first}])")
        rules.append(rule)
    return rules


def _check_kind(rule: RiskRule, where: str) -> None:
    if rule.kind not in KINDS:
        known = ", ".join(KINDS)
        raise RiskConfigError(f"{where}.kind: unknown kind '{rule.kind}' (known: {known})")
    defaults = {default.id: default.kind for default in default_rules()}
    if defaults.get(rule.id, rule.kind) != rule.kind:
        raise RiskConfigError(
            f"{where}.id: '{rule.id}' is a default's id; only a {defaults[rule.id]} rule may use it"
        )


def _convert(item: Any, where: str) -> RiskRule:
    try:
        return msgspec.convert(item, RiskRule)
    except msgspec.ValidationError as exc:
        raise RiskConfigError(_explain(str(exc), where)) from None


_AT = re.compile(r"(?P<msg>.*?)(?: - at `\$(?P<loc>[^`]*)`)?")
_FIELD = re.compile(r"Object (?P<what>missing required|contains unknown) field `(?P<name>[^`]*)`")
_BOUND = re.compile(r"Expected `int` (?P<bound>[<>]= \d+)")
_CHOICES = {".decision": "deny, challenge", ".mode": "enforce, shadow"}


def _explain(message: str, where: str) -> str:
    """Turn a msgspec error into `<key path> <what is wrong>`."""
    found = _AT.fullmatch(message)
    msg, loc = (found["msg"], found["loc"] or "") if found else (message, "")
    if field := _FIELD.fullmatch(msg):
        problem = "is required" if field["what"] == "missing required" else "is not a known key"
        return f"{where}{loc}.{field['name']} {problem}"
    if bound := _BOUND.fullmatch(msg):
        return f"{where}{loc} must be {bound['bound']}"
    if msg.startswith("Invalid enum value") and loc in _CHOICES:
        return f"{where}{loc} must be one of {_CHOICES[loc]}"
    if loc == ".id" and "match" in msg:
        return f"{where}.id must be 1-64 of A-Z a-z 0-9 _ . -"
    return f"{where}{loc}: {msg}"
