"""The supplier report's percentiles come from the database, per supplier and day, over the
calls that have a latency only."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from backend.reports import suppliers_report
from backend.schema import supplier_calls


def _call(n: int, supplier: str, day: str, outcome: str, latency: int | None) -> dict[str, Any]:
    return {
        "stream": "s",
        "entry_id": f"1-{n}",
        "supplier": supplier,
        "day": day,
        "outcome": outcome,
        "latency_ms": latency,
        "failover": 1 if outcome == "timeout" else 0,
    }


async def test_percentiles_rank_each_groups_timed_calls_and_the_day_filter_holds(
    engine: AsyncEngine,
) -> None:
    calls = [_call(n, "a", "2026-01-01", "ok", 11 - n) for n in range(1, 11)]  # 10..1
    calls += [_call(20 + n, "a", "2026-01-01", "rejected_open", None) for n in range(5)]
    calls += [_call(30, "a", "2026-01-01", "timeout", 900)]
    calls += [_call(40, "b", "2026-01-01", "ok", 7)]
    calls += [_call(50, "a", "2026-01-02", "ok", 200), _call(51, "a", "2026-01-02", "ok", 100)]
    async with engine.begin() as connection:
        await connection.execute(supplier_calls.insert(), calls)
    rows = (await suppliers_report(engine, None))["suppliers"]
    assert [(r["supplier"], r["day"]) for r in rows] == [
        ("a", "2026-01-01"),
        ("a", "2026-01-02"),
        ("b", "2026-01-01"),
    ]
    first = rows[0]
    assert {k: n for k, n in first["calls"].items() if n} == {
        "ok": 10,
        "rejected_open": 5,
        "timeout": 1,
    }
    # 11 timed calls, 1..10 and 900: rank 5 for p50, rank min(10, int(10.89)) = 10 for p99.
    assert (first["p50_ms"], first["p99_ms"], first["failovers"]) == (6, 900, 1)
    assert (rows[1]["p50_ms"], rows[1]["p99_ms"]) == (200, 200)
    assert (rows[2]["p50_ms"], rows[2]["p99_ms"]) == (7, 7)
    only = (await suppliers_report(engine, "2026-01-02"))["suppliers"]
    assert [(r["supplier"], r["day"], r["p50_ms"], r["p99_ms"]) for r in only] == [
        ("a", "2026-01-02", 200, 200)
    ]
