"""Challenge passes at the gateway (SPEC §6): check a request's `X-Challenge-Pass` in process,
name the key that spends its nonce in the decision's own atomic call, and count the outcome.

The claim and redeem-guard scripts set that key (NX) only when an enforced `challenge` rule
would refuse the request and no `deny` rule does: a pass lifts a challenge, nothing else, and
is spent by the request it lifted. The caller learns nothing of why a pass did not help; the
metrics do, by a bounded reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from gateway.models import Caller
from gateway.settings import Client
from gateway.telemetry import metrics
from gateway.valkey import keys
from risk.challenge import PassCheck, check_pass, pass_key_suffix
from risk.rules import RiskRule


class ChallengePasses:
    """Checks passes against each client's `challenge_secret`, on an injected clock."""

    def __init__(self, clients: Sequence[Client], clock: Callable[[], float] = time.time) -> None:
        self._secrets = {c.id: c.challenge_secret for c in clients}
        self._clock = clock

    def check(self, caller: Caller, user_id: str, device_id: str) -> PassCheck | None:
        """None when the request carries no pass; else whether it is one for this request."""
        if caller.challenge_pass is None:
            return None
        secret = self._secrets.get(caller.client_id, "")
        return check_pass(
            secret, caller.challenge_pass, caller.client_id, user_id, device_id, self._clock()
        )


def spend_keys(tag: str, caller: Caller, check: PassCheck | None) -> list[str]:
    """The key that spends a valid pass's nonce in `tag`'s slot, or none."""
    if check is None or not check.ok:
        return []
    return [keys.nonce(tag, pass_key_suffix(caller.client_id, check.nonce))]


def count(route: str, check: PassCheck | None, refusal: str, fired: Iterable[RiskRule]) -> None:
    """Count one decided request (`refusal`: "challenge", "deny" for a rule's, else ""): a
    challenge issued and the pass's refusal, or a challenge its pass lifted (an enforced
    challenge rule fired, yet no rule refused the request)."""
    if refusal == "challenge":
        metrics.challenges_issued.labels(route).inc()
        if check is not None:  # a valid pass the script would not take was spent before
            metrics.challenge_passes_refused.labels(route, check.reason or "reused").inc()
    elif not refusal and check is not None and check.ok and any(lifts(r) for r in fired):
        metrics.challenges_passed.labels(route).inc()


def lifts(rule: RiskRule) -> bool:
    """Whether a hit of this rule is one a pass lifts: an enforced challenge."""
    return rule.decision == "challenge" and rule.mode == "enforce"
