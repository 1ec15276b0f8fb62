"""The invariant checker's verdicts on constructed stats and ledgers (no Locust, no gateway)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from loadtests import invariants
from loadtests.invariants import Limits, Stats, check, verdict
from loadtests.ledger import Delivery, Grant, Ledger, card_fingerprint
from loadtests.settings import Settings


def stats(added: int = 10, left: int = 7, granted: int = 3, redeemed: int = 1) -> Stats:
    return Stats("c1", added, left, granted, redeemed, {"sold_out": 2})


def grant(n: int, user: str = "", device: str = "", key: str = "", code: str = "") -> Grant:
    return Grant(f"claim-{n}", user or f"u{n}", device or f"d{n}", key or f"k{n}", code or f"v{n}")


def ledger(*grants: Grant, deliveries: tuple[Delivery, ...] = (), ambiguous: int = 0) -> Ledger:
    book = Ledger(ambiguous_claims=ambiguous)
    for g in grants:
        book.record_grant(g)
    for d in deliveries:
        book.record_delivery(d)
    return book


def kinds(breaches: list[invariants.Breach]) -> list[str]:
    return [b.kind for b in breaches]


LIMITS = Limits(per_user_limit=1)
THREE = (grant(1), grant(2), grant(3))


def test_consistent_run_is_ok() -> None:
    book = ledger(*THREE, grant(1), deliveries=(Delivery("r1", "v1", "voucher"),))  # 1 replayed
    assert check(stats(), book, LIMITS) == []
    assert verdict([]) == "invariants: ok"


def test_grants_are_counted_from_the_snapshot_before_the_run() -> None:
    before = stats(added=10, left=9, granted=1)
    assert check(stats(), ledger(grant(2), grant(3)), LIMITS, before) == []
    assert kinds(check(stats(), ledger(*THREE), LIMITS, before)) == ["grants_unaccounted"]


def test_stock_not_conserved() -> None:
    found = check(stats(left=6), ledger(*THREE), LIMITS)
    assert kinds(found) == ["stock_mismatch"]
    assert "granted=3 != stock_added-stock_left=10-6" in verdict(found)


def test_oversold() -> None:
    found = check(stats(added=2, left=0, granted=3), ledger(*THREE), LIMITS)
    assert kinds(found) == ["stock_mismatch", "oversold"]
    assert verdict(found).startswith("invariants: BREACH stock_mismatch: ")


def test_more_redeemed_than_granted() -> None:
    assert kinds(check(stats(redeemed=4), ledger(*THREE), LIMITS)) == ["over_redeemed"]


def test_gateway_counted_grants_nobody_saw() -> None:
    found = check(stats(), ledger(grant(1), grant(2)), LIMITS)
    assert kinds(found) == ["grants_unaccounted"]
    assert "gateway counted 3 grants, load test saw 2 (+0 ambiguous)" in found[0].detail


def test_ambiguous_attempts_may_explain_unseen_grants() -> None:
    assert check(stats(), ledger(grant(1), grant(2), ambiguous=1), LIMITS) == []


def test_load_test_saw_grants_the_gateway_did_not_count() -> None:
    found = check(stats(), ledger(*THREE, grant(4)), LIMITS)
    assert kinds(found) == ["grants_unaccounted"]


def test_grant_count_not_judged_when_others_use_the_campaign() -> None:
    assert check(stats(), ledger(grant(1)), Limits(per_user_limit=1, exclusive=False)) == []


def test_user_over_its_allowance() -> None:
    book = ledger(grant(1, user="alice"), grant(2, user="alice"), grant(3))
    found = check(stats(), book, LIMITS)
    assert kinds(found) == ["per_user_limit"]
    assert found[0].detail == "limit 1: alice=2"
    assert check(stats(), book, Limits(per_user_limit=2)) == []


def test_device_over_its_allowance_only_when_configured() -> None:
    book = ledger(grant(1, device="farm"), grant(2, device="farm"), grant(3))
    assert check(stats(), book, LIMITS) == []
    found = check(stats(), book, Limits(per_user_limit=1, per_device_limit=1))
    assert kinds(found) == ["per_device_limit"]


def test_idempotency_key_with_two_claims() -> None:
    book = ledger(grant(1, key="same"), grant(2, key="same"), grant(3))
    found = check(stats(), book, LIMITS)
    assert kinds(found) == ["idempotency_key_two_claims"]
    assert found[0].detail == "same=2"


def test_card_secret_handed_to_two_redemptions() -> None:
    card = card_fingerprint("6200-1", "s3cret")
    book = ledger(
        *THREE,
        deliveries=(
            Delivery("r1", "v1", "card_secret", card),
            Delivery("r2", "v2", "card_secret", card),
        ),
    )
    found = check(stats(redeemed=2), book, LIMITS)
    assert kinds(found) == ["card_secret_reused"]
    assert "s3cret" not in verdict(found)


def test_voucher_delivered_twice() -> None:
    book = ledger(
        *THREE, deliveries=(Delivery("r1", "v1", "voucher"), Delivery("r2", "v1", "voucher"))
    )
    assert kinds(check(stats(redeemed=1), book, LIMITS)) == ["voucher_delivered_twice"]


def test_many_offenders_are_shortened() -> None:
    book = ledger(*(grant(i, key="k") for i in range(5)))
    found = check(stats(added=5, left=0, granted=5), book, LIMITS)
    assert found[0].detail == "k=5"
    book = ledger(
        *(g for i in range(5) for g in (grant(i, user=f"u{i}"), grant(i + 10, user=f"u{i}")))
    )
    found = check(stats(added=10, left=0, granted=10), book, LIMITS)
    assert found[0].detail.endswith("(+2 more)")


def test_stats_document_is_validated() -> None:
    with pytest.raises(invariants.StatsError, match=r"stats\.stock_left"):
        Stats.from_json({"stock_added": 1, "stock_left": "1", "granted": 0, "redeemed": 0})
    parsed = Stats.from_json({**asdict(stats()), "extra": True})
    assert parsed == stats()


def test_ledger_round_trips_and_merges(tmp_path: Path) -> None:
    book = ledger(*THREE, deliveries=(Delivery("r1", "v1", "card_secret", "ab"),), ambiguous=2)
    book.record_outcome("claim", 201)
    book.stats_before = asdict(stats())
    book.dump(tmp_path / "ledger.json")
    merged = Ledger()
    merged.merge(Ledger.load(tmp_path / "ledger.json"))
    merged.merge(ledger(grant(4)))
    assert [g.claim_id for g in merged.grants] == ["claim-1", "claim-2", "claim-3", "claim-4"]
    assert merged.deliveries == book.deliveries
    assert (merged.ambiguous_claims, merged.outcomes["claim 201"]) == (2, 1)
    assert merged.stats_before == asdict(stats())


def test_run_check_reports_unreadable_stats() -> None:
    settings = Settings(admin_url="http://127.0.0.1:9", campaign="c1")
    line, code = invariants.run_check(settings, Ledger())
    assert line.startswith("invariants: ERROR GET http://127.0.0.1:9/admin/campaigns/c1/stats")
    assert code == invariants.EXIT_ERROR


async def test_cli_reads_stats_and_ledgers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen_auth: list[str] = []

    async def stats_route(request: web.Request) -> web.Response:
        seen_auth.append(request.headers.get("Authorization", ""))
        return web.json_response(asdict(stats()))

    app = web.Application()
    app.router.add_get("/admin/campaigns/{cid}/stats", stats_route)
    ledger(*THREE).dump(tmp_path / "ledger-1.json")
    ledger(grant(1, user="u1")).dump(tmp_path / "ledger-2.json")  # a replay seen elsewhere
    async with TestServer(app) as server:
        monkeypatch.setenv("ADMIN_URL", str(server.make_url("")))
        monkeypatch.setenv("ADMIN_TOKEN", "t0k")
        monkeypatch.setenv("CAMPAIGN", "c1")
        monkeypatch.setenv("MIN_REDEEM_RATE", "0")  # these ledgers hold no redemptions
        args = ["--ledger", str(tmp_path / "ledger-1.json"), str(tmp_path / "ledger-2.json")]
        assert await asyncio.to_thread(invariants.main, args) == 0
        ledger(grant(9, user="u1")).dump(tmp_path / "ledger-2.json")
        assert await asyncio.to_thread(invariants.main, args) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "invariants: ok"
    assert out[1].startswith("invariants: BREACH grants_unaccounted")
    assert "per_user_limit: limit 1: u1=2" in out[1]
    assert seen_auth == ["Bearer t0k", "Bearer t0k"]


def test_honest_redemptions_must_succeed_at_the_stated_rate() -> None:
    limits = Limits(per_user_limit=1, min_redeem_rate=0.99)
    ok = Ledger(outcomes=Counter({"redeem 200": 99, "redeem 429 rate_limited": 1}))
    assert check(stats(), ok, limits, exclusive_ok()) == []
    refused = Ledger(outcomes=Counter({"redeem 200": 21, "redeem 429 rate_limited": 740}))
    found = check(stats(), refused, limits, exclusive_ok())
    assert kinds(found) == ["honest_redemptions"]
    assert "21/761 succeeded (2.8% < 99%; 429: 740)" in verdict(found)
    # the guessers' and the double taps' refusals are not honest first redemptions
    others = Counter({"redeem 202": 5, "redeem [guess] 429 rate_limited": 900})
    others["redeem [again] 409 voucher_redeemed"] = 3
    assert check(stats(), Ledger(outcomes=others), limits, exclusive_ok()) == []
    assert kinds(check(stats(), Ledger(), limits, exclusive_ok())) == ["honest_redemptions"]


def test_guessers_must_meet_the_lockout() -> None:
    limits = Limits(per_user_limit=1, guess_lockout=50)
    locked = Ledger(guessers=2, outcomes=Counter({"redeem [guess] 404 voucher_not_found": 100}))
    locked.outcomes["redeem [guess] 429 rate_limited"] = 400
    assert check(stats(), locked, limits, exclusive_ok()) == []
    free = Ledger(guessers=2, outcomes=Counter({"redeem [guess] 404 voucher_not_found": 101}))
    assert kinds(check(stats(), free, limits, exclusive_ok())) == ["guessers_not_locked_out"]


def exclusive_ok() -> Stats:
    """A `before` snapshot with the same grant count: the empty ledgers' grants add up."""
    return stats()
