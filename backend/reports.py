"""The reports: every campaign's headline numbers, one campaign's funnel, suppliers per day."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.schema import (
    GRANTED,
    breaker_openings,
    campaigns,
    counters,
    events,
    minute_counts,
    supplier_calls,
    vouchers,
)


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _headline(campaign_id: str, name: str | None, c: dict[str, int]) -> dict[str, Any]:
    granted, redeemed = c.get("granted", 0), c.get("redeemed", 0)
    return {
        "campaign_id": campaign_id,
        "name": name,
        "stock_added": c.get("stock_added", 0),
        "granted": granted,
        "redeemed": redeemed,
        "redemption_rate": _rate(redeemed, granted),
        "rejected": sum(n for k, n in c.items() if k.startswith("rejected:")),
    }


async def overview(engine: AsyncEngine) -> dict[str, Any]:
    """Every campaign the ledger has seen, with its headline numbers."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(counters.c.campaign_id, counters.c.name, counters.c.n).where(
                counters.c.campaign_id != ""
            )
        )
        per: dict[str, dict[str, int]] = defaultdict(dict)
        for row in rows:
            per[row.campaign_id][row.name] = row.n
        config = await connection.execute(select(campaigns.c.campaign_id, campaigns.c.name))
        names = {row.campaign_id: row.name for row in config}
    ids = sorted(set(per) | set(names))
    return {"campaigns": [_headline(i, names.get(i), per.get(i, {})) for i in ids]}


def _split(c: dict[str, int]) -> dict[str, Any]:
    rejected: dict[str, int] = {}
    risk: dict[str, dict[str, int]] = defaultdict(dict)
    clients: dict[str, dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(("granted", "rejected", "redeemed"), 0)
    )
    for name, n in sorted(c.items()):
        kind, _, rest = name.partition(":")
        if kind == "rejected":
            rejected[rest] = n
        elif kind == "risk":
            rule, _, mode = rest.rpartition(":")
            risk[rule][mode] = n
        elif kind == "client":
            client, _, outcome = rest.rpartition(":")
            clients[client][outcome] = n
    return {"rejected": rejected, "risk_hits": dict(risk), "by_client": dict(clients)}


async def _voucher_states(connection: Any, campaign_id: str, now_ms: int) -> dict[str, int]:
    frozen = await connection.scalar(
        select(func.count()).where(
            vouchers.c.campaign_id == campaign_id, vouchers.c.state == "frozen"
        )
    )
    expired = await connection.scalar(
        select(func.count()).where(
            vouchers.c.campaign_id == campaign_id,
            vouchers.c.state == "issued",
            vouchers.c.expires_ms < now_ms,
        )
    )
    return {"frozen": int(frozen or 0), "expired": int(expired or 0)}


async def _series(connection: Any, campaign_id: str) -> list[dict[str, Any]]:
    rows = await connection.execute(
        select(minute_counts.c.minute, minute_counts.c.name, minute_counts.c.n)
        .where(minute_counts.c.campaign_id == campaign_id)
        .order_by(minute_counts.c.minute)
    )
    minutes: dict[str, dict[str, Any]] = {}
    for row in rows:
        point = minutes.setdefault(
            row.minute, {"minute": row.minute + ":00Z", "granted": 0, "rejected": 0, "redeemed": 0}
        )
        point[row.name] = row.n
    return list(minutes.values())


async def _sell_out(
    connection: Any, campaign_id: str, stock: int, granted: int, starts_ms: int | None
) -> dict[str, Any] | None:
    """When the grant that took the last unit of stock_added happened, and how long after start."""
    if stock <= 0 or granted < stock:
        return None
    query = (
        select(events.c.ts, events.c.ts_ms)
        .where(GRANTED, events.c.campaign_id == campaign_id)
        .order_by(events.c.ts_ms, events.c.entry_id)
        .offset(stock - 1)
        .limit(1)
    )
    last = (await connection.execute(query)).first()
    if last is None:
        return None
    first_ms = starts_ms
    if first_ms is None:
        first_ms = await connection.scalar(
            select(func.min(events.c.ts_ms)).where(GRANTED, events.c.campaign_id == campaign_id)
        )
    return {
        "sold_out_at": last.ts,
        "seconds": round((last.ts_ms - int(first_ms or last.ts_ms)) / 1000, 3),
    }


async def campaign_report(
    engine: AsyncEngine, campaign_id: str, now_ms: int | None = None
) -> dict[str, Any] | None:
    """One campaign's funnel and breakdowns; None when the ledger never saw it."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(counters.c.name, counters.c.n).where(counters.c.campaign_id == campaign_id)
        )
        c = {row.name: row.n for row in rows}
        config = (
            await connection.execute(
                select(campaigns).where(campaigns.c.campaign_id == campaign_id)
            )
        ).first()
        if not c and config is None:
            return None
        states = await _voucher_states(connection, campaign_id, now_ms)
        series = await _series(connection, campaign_id)
        granted, stock = c.get("granted", 0), c.get("stock_added", 0)
        sell_out = await _sell_out(
            connection, campaign_id, stock, granted, config.starts_ms if config else None
        )
    return _campaign_document(campaign_id, c, config, states, series, sell_out)


def _campaign_document(
    campaign_id: str,
    c: dict[str, int],
    config: Any,
    states: dict[str, int],
    series: list[dict[str, Any]],
    sell_out: dict[str, Any] | None,
) -> dict[str, Any]:
    granted, redeemed = c.get("granted", 0), c.get("redeemed", 0)
    cost = None
    if config is not None and config.unit_cost is not None and config.currency:
        cost = {
            "unit_cost": config.unit_cost,
            "currency": config.currency,
            "spent": config.unit_cost * granted,
        }
    funnel = {
        "stock_added": c.get("stock_added", 0),
        "stock_left": c.get("stock_added", 0) - granted + c.get("returned", 0),
        "granted": granted,
        "redeemed": redeemed,
        "redemption_rate": _rate(redeemed, granted),
        "expired": states["expired"],
        "frozen": states["frozen"],
        "revoked": c.get("revoked", 0),
        "returned": c.get("returned", 0),
    }
    return {
        "campaign_id": campaign_id,
        "name": config.name if config is not None else None,
        "funnel": funnel,
        **_split(c),
        "series": series,
        "sell_out": sell_out,
        "cost": cost,
    }


async def _latency_at(connection: Any, supplier: str, day: str, timed: int, q: float) -> int | None:
    """The latency at rank min(n - 1, int(q * n)) of the group's n timed calls: the database
    sorts them and hands over one value, whatever the number of calls."""
    if not timed:
        return None
    c = supplier_calls.c
    query = (
        select(c.latency_ms)
        .where(c.supplier == supplier, c.day == day, c.latency_ms.is_not(None))
        .order_by(c.latency_ms)
        .offset(min(timed - 1, int(q * timed)))
        .limit(1)
    )
    value = await connection.scalar(query)
    return None if value is None else int(value)


async def suppliers_report(engine: AsyncEngine, day: str | None) -> dict[str, Any]:
    """Per supplier per day: calls by outcome, p50/p99 latency of the calls made (refusals
    have none), failovers and breaker openings; from `supplier.call` and
    `supplier.breaker_opened` events."""
    c, b = supplier_calls.c, breaker_openings.c
    counts = select(
        c.supplier,
        c.day,
        c.outcome,
        func.count().label("n"),
        func.sum(c.failover).label("f"),
        func.count(c.latency_ms).label("timed"),
    ).group_by(c.day, c.supplier, c.outcome)  # the index's order (schema.supplier_calls)
    openings = select(b.supplier, b.day, func.count().label("n")).group_by(b.supplier, b.day)
    if day is not None:
        counts, openings = counts.where(c.day == day), openings.where(b.day == day)
    groups: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"calls": {}, "timed": 0, "failovers": 0, "breaker_openings": 0}
    )
    rows = []
    async with engine.connect() as connection:
        for row in await connection.execute(counts):
            g = groups[(row.supplier, row.day)]
            g["calls"][row.outcome] = row.n
            g["failovers"] += int(row.f or 0)
            g["timed"] += row.timed
        for row in await connection.execute(openings):
            groups[(row.supplier, row.day)]["breaker_openings"] = row.n
        # Every row names every outcome seen, so the CSV has one column per outcome.
        outcomes = sorted({outcome for g in groups.values() for outcome in g["calls"]})
        for (supplier, d), g in sorted(groups.items()):
            rows.append(
                {
                    "supplier": supplier,
                    "day": d,
                    "calls": {outcome: g["calls"].get(outcome, 0) for outcome in outcomes},
                    "p50_ms": await _latency_at(connection, supplier, d, g["timed"], 0.5),
                    "p99_ms": await _latency_at(connection, supplier, d, g["timed"], 0.99),
                    "failovers": g["failovers"],
                    "breaker_openings": g["breaker_openings"],
                }
            )
    return {"suppliers": rows}
