"""The gateway's promises, checked after a load test against its own stats and the ledger.

    python -m loadtests.invariants [--ledger loadtests/reports/ledger-*.json ...]

reads `GET {ADMIN_URL}/admin/campaigns/{CAMPAIGN}/stats`, merges the ledgers the Locust
processes wrote, and prints one verdict line: `invariants: ok` (exit 0),
`invariants: BREACH <details>` (exit 1) or `invariants: ERROR <why>` (exit 2: stats unreadable,
nothing was verified). Locust calls `run_check` itself when it quits.
"""

from __future__ import annotations

import argparse
import re
import sys
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from loadtests.ledger import Ledger
from loadtests.settings import Settings

EXIT_OK, EXIT_BREACH, EXIT_ERROR = 0, 1, 2
_MAX_EXAMPLES = 3


class StatsError(RuntimeError):
    """The stats endpoint could not be read or did not answer per SPEC §4."""


@dataclass(frozen=True)
class Stats:
    """`GET /admin/campaigns/{id}/stats` (SPEC §4)."""

    campaign_id: str
    stock_added: int
    stock_left: int
    granted: int
    redeemed: int
    rejected: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Stats:
        """Validate a decoded stats document; raises StatsError naming the bad field."""
        values: dict[str, int] = {}
        for name in ("stock_added", "stock_left", "granted", "redeemed"):
            value = doc.get(name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise StatsError(f"stats.{name}: expected an integer, got {value!r}")
            values[name] = value
        rejected = doc.get("rejected", {})
        if not isinstance(rejected, dict):
            raise StatsError(f"stats.rejected: expected an object, got {rejected!r}")
        return cls(campaign_id=str(doc.get("campaign_id", "")), rejected=rejected, **values)


@dataclass(frozen=True)
class Limits:
    """What the checks assume about the campaign and the run."""

    per_user_limit: int = 1
    per_device_limit: int = 0  # 0: not checked
    exclusive: bool = True  # the load test was the campaign's only client during the run
    min_redeem_rate: float = 0.0  # share of honest redemptions that must succeed (0: not judged)
    guess_lockout: int = 0  # failed guesses after which a guesser is refused (0: not judged)


@dataclass(frozen=True)
class Breach:
    """One broken promise: a short kind and the evidence."""

    kind: str
    detail: str


def _examples(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(items[:_MAX_EXAMPLES])
    return shown + (f" (+{len(items) - _MAX_EXAMPLES} more)" if len(items) > _MAX_EXAMPLES else "")


def check_stock(after: Stats) -> list[Breach]:
    """Stock is conserved and never oversold."""
    breaches = []
    if after.granted != after.stock_added - after.stock_left:
        breaches.append(
            Breach(
                "stock_mismatch",
                f"granted={after.granted} != stock_added-stock_left="
                f"{after.stock_added}-{after.stock_left}",
            )
        )
    if after.granted > after.stock_added:
        breaches.append(
            Breach("oversold", f"granted={after.granted} > stock_added={after.stock_added}")
        )
    if after.redeemed > after.granted:
        breaches.append(
            Breach("over_redeemed", f"redeemed={after.redeemed} > granted={after.granted}")
        )
    return breaches


def check_seen_grants(after: Stats, before: Stats | None, ledger: Ledger) -> list[Breach]:
    """The gateway's grant count moved by exactly the grants the load test received.

    Claims that ended in a transport error or an unexplained 5xx may have been granted
    without the answer reaching us, so they widen the allowed range upwards.
    """
    delta = after.granted - (before.granted if before else 0)
    seen = len({g.claim_id for g in ledger.grants})
    if seen > delta:
        return [
            Breach("grants_unaccounted", f"load test saw {seen} grants, gateway counted {delta}")
        ]
    if delta > seen + ledger.ambiguous_claims:
        return [
            Breach(
                "grants_unaccounted",
                f"gateway counted {delta} grants, load test saw {seen} "
                f"(+{ledger.ambiguous_claims} ambiguous)",
            )
        ]
    return []


def _over_limit(owners: Mapping[str, set[str]], limit: int) -> list[str]:
    return sorted(f"{owner}={len(ids)}" for owner, ids in owners.items() if len(ids) > limit)


def check_allowances(ledger: Ledger, limits: Limits) -> list[Breach]:
    """No user (and, when configured, no device) got more grants than its allowance."""
    per_user: dict[str, set[str]] = defaultdict(set)
    per_device: dict[str, set[str]] = defaultdict(set)
    for grant in ledger.grants:
        per_user[grant.user_id].add(grant.claim_id)
        per_device[grant.device_id].add(grant.claim_id)
    breaches = []
    if over := _over_limit(per_user, limits.per_user_limit):
        breaches.append(
            Breach("per_user_limit", f"limit {limits.per_user_limit}: {_examples(over)}")
        )
    if limits.per_device_limit and (over := _over_limit(per_device, limits.per_device_limit)):
        breaches.append(
            Breach("per_device_limit", f"limit {limits.per_device_limit}: {_examples(over)}")
        )
    return breaches


def check_idempotency(ledger: Ledger) -> list[Breach]:
    """One Idempotency-Key never earned two different claim ids."""
    per_key: dict[str, set[str]] = defaultdict(set)
    for grant in ledger.grants:
        per_key[grant.idempotency_key].add(grant.claim_id)
    reused = sorted(f"{key}={len(ids)}" for key, ids in per_key.items() if len(ids) > 1)
    return [Breach("idempotency_key_two_claims", _examples(reused))] if reused else []


def check_deliveries(ledger: Ledger) -> list[Breach]:
    """No card secret went to two redemptions, no voucher was delivered twice."""
    per_card: dict[str, set[str]] = defaultdict(set)
    per_voucher: dict[str, set[str]] = defaultdict(set)
    for delivery in ledger.deliveries:
        if delivery.card:
            per_card[delivery.card].add(delivery.redemption_id)
        per_voucher[delivery.voucher_code].add(delivery.redemption_id)
    breaches = []
    if cards := [f"card#{c[:8]}={len(r)}" for c, r in sorted(per_card.items()) if len(r) > 1]:
        breaches.append(Breach("card_secret_reused", _examples(cards)))
    if vouchers := [f"{v}={len(r)}" for v, r in sorted(per_voucher.items()) if len(r) > 1]:
        breaches.append(Breach("voucher_delivered_twice", _examples(vouchers)))
    return breaches


def answers(ledger: Ledger, route: str) -> Counter[int]:
    """How often `route` was answered with each status (0: no answer)."""
    pattern = re.compile(rf"^{re.escape(route)} (\d+)(?: |$)")
    found: Counter[int] = Counter()
    for outcome, count in ledger.outcomes.items():
        if match := pattern.match(outcome):
            found[int(match[1])] += count
    return found


def check_honest_redemptions(ledger: Ledger, min_rate: float) -> list[Breach]:
    """At least `min_rate` of the honest users' first redemptions were delivered (or pending).

    The guessers come from other addresses and devices, so their lockout must never reach an
    honest user; a run that tried no honest redemption proves nothing and fails too.
    """
    seen = answers(ledger, "redeem")
    tried = sum(seen.values())
    if not tried:
        return [Breach("honest_redemptions", "none tried: the run judged no redemption")]
    succeeded = seen[200] + seen[202]
    if succeeded >= min_rate * tried:
        return []
    refused = ", ".join(f"{status}: {n}" for status, n in sorted(seen.items()) if status >= 300)
    return [
        Breach(
            "honest_redemptions",
            f"{succeeded}/{tried} succeeded ({succeeded / tried:.1%} < {min_rate:.0%}; {refused})"
            " - is 127.0.0.1 in the gateway's server.trusted_proxies (docs/loadtest.md)?",
        )
    ]


def check_guessers_locked_out(ledger: Ledger, lockout: int) -> list[Breach]:
    """Guessers who guessed wrong more often than the lockout allows met 429s."""
    seen = answers(ledger, "redeem [guess]")
    if ledger.guessers and seen[404] > ledger.guessers * lockout and not seen[429]:
        return [
            Breach(
                "guessers_not_locked_out",
                f"{ledger.guessers} guessers had {seen[404]} wrong guesses answered 404 and none"
                f" refused (lockout after {lockout} per IP or device)",
            )
        ]
    return []


def check(
    after: Stats, ledger: Ledger, limits: Limits, before: Stats | None = None
) -> list[Breach]:
    """Every invariant the run can judge; an empty list means none was broken."""
    breaches = check_stock(after)
    if limits.exclusive:
        breaches += check_seen_grants(after, before, ledger)
    breaches += check_allowances(ledger, limits)
    breaches += check_idempotency(ledger)
    breaches += check_deliveries(ledger)
    if limits.min_redeem_rate:
        breaches += check_honest_redemptions(ledger, limits.min_redeem_rate)
    if limits.guess_lockout:
        breaches += check_guessers_locked_out(ledger, limits.guess_lockout)
    return breaches


def verdict(breaches: list[Breach]) -> str:
    """The one line a person or CI reads: `invariants: ok` or `invariants: BREACH ...`."""
    if not breaches:
        return "invariants: ok"
    return "invariants: BREACH " + "; ".join(f"{b.kind}: {b.detail}" for b in breaches)


def fetch_stats(settings: Settings, timeout_s: float = 5.0) -> Stats:
    """Read the campaign's stats from the admin API; raises StatsError on any failure."""
    if not settings.campaign:
        raise StatsError("CAMPAIGN is not set: name the campaign the run used")
    url = f"{settings.admin_url}/admin/campaigns/{settings.campaign}/stats"
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {settings.admin_token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            doc = orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise StatsError(f"GET {url}: HTTP {exc.code}") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise StatsError(f"GET {url}: {exc}") from None
    if not isinstance(doc, dict):
        raise StatsError(f"GET {url}: expected a JSON object")
    return Stats.from_json(doc)


def limits_from(settings: Settings) -> Limits:
    """The check's assumptions, from the load-test settings."""
    return Limits(
        settings.per_user_limit,
        settings.per_device_limit,
        settings.exclusive,
        settings.min_redeem_rate,
        settings.guess_lockout,
    )


def run_check(settings: Settings, ledger: Ledger) -> tuple[str, int]:
    """Fetch the stats, judge them with the ledger; returns (verdict line, exit code)."""
    try:
        after = fetch_stats(settings)
        before = Stats.from_json(ledger.stats_before) if ledger.stats_before else None
    except StatsError as exc:
        return f"invariants: ERROR {exc}", EXIT_ERROR
    breaches = check(after, ledger, limits_from(settings), before)
    return verdict(breaches), EXIT_BREACH if breaches else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """CLI: merge ledgers, check, print the verdict, return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m loadtests.invariants", description=__doc__)
    parser.add_argument("--ledger", type=Path, nargs="*", default=[], help="ledger JSON files")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    ledger = Ledger()
    for path in args.ledger:
        ledger.merge(Ledger.load(path))
    if not args.ledger:  # nothing seen: only the stock promises can be judged
        settings = replace(settings, exclusive=False, min_redeem_rate=0.0, guess_lockout=0)
    line, code = run_check(settings, ledger)
    print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
