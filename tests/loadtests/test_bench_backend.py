"""The benchmark's backend phases at a small scale: ingest against the claim peak, reports."""

from __future__ import annotations

from bench import ingest, reports
from bench.report import Report, Round, ingest_doc
from bench.wrk import WrkResult


def _round(variant: str, rps: float) -> Round:
    result = WrkResult(1, 1.0, rps, 1.0, 2.0, 0, 0)
    return Round(variant, 1, result, 0.0, 0.0, 0.0, 0.0)


def test_the_ingest_bar_holds_the_slower_database_to_twice_the_peak_claim_round() -> None:
    report = Report(
        rounds=[_round("claim", 9000), _round("claim", 10_000), _round("baseline", 40_000)],
        ingest={
            "events": 100,
            "sqlite": {"events_per_s": 30_000},
            "postgresql": {"events_per_s": 19_000},
        },
    )
    doc = ingest_doc(report)
    assert doc["peak_claims_per_s"] == 10_000  # claim rounds only, the best of them
    assert doc["ingest_vs_peak_claims"] == 1.9  # PostgreSQL, the slower
    assert doc["ingest_bar_met"] is False
    report.ingest["postgresql"]["events_per_s"] = 20_000
    assert ingest_doc(report)["ingest_bar_met"] is True


def test_without_claim_rounds_the_bar_uses_an_earlier_runs_peak_or_is_not_judged() -> None:
    alone = Report(ingest={"events": 1, "sqlite": {"events_per_s": 5000}})
    doc = ingest_doc(alone)
    assert doc["ingest_vs_peak_claims"] is None and doc["ingest_bar_met"] is None
    doc = ingest_doc(alone, earlier_peak=2000)
    assert (doc["peak_claims_per_s"], doc["ingest_vs_peak_claims"]) == (2000, 2.5)
    assert doc["peak_claims_from"] == "an earlier run (bench/last.json)"
    alone.rounds = [_round("claim", 4000)]  # this run's own peak wins
    assert ingest_doc(alone, earlier_peak=2000)["ingest_vs_peak_claims"] == 1.25


async def test_the_ingest_benchmark_commits_every_event_it_produced() -> None:
    result = await ingest.run(3000, "sqlite")
    assert result["sqlite"]["events"] == 3000


async def test_the_report_benchmark_asks_every_report_of_a_ledger_it_built() -> None:
    result = await reports.run(claims=3000, repeat=1)
    assert result["ledger"]["events"] > result["ledger"]["claims"] == 3000
    assert result["ledger"]["granted"] > 0
    assert set(result["reports"]) == {
        "overview",
        "campaign",
        "suppliers",
        "suppliers_day",
        "audit_user",
        "audit_voucher",
        "audit_campaign",
        "wallet",
    }
    # Each answered 200 (anything else raises) with a body.
    assert all(r["bytes"] > 20 for r in result["reports"].values())
