"""Test helpers: a fake clock, a recording observer, and a driver for the simulator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp

from supplier_pool.pool import OUTCOMES, SupplierCall, SupplierSpec


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RecordingObserver:
    calls: list[tuple[str, str]] = field(default_factory=list)
    # (supplier, outcome, order id, op, failover) of each call, in order
    details: list[tuple[str, str, str, str, bool]] = field(default_factory=list)
    transitions: list[tuple[str, str, str]] = field(default_factory=list)

    def call_finished(self, call: SupplierCall) -> None:
        assert call.seconds >= 0
        assert call.outcome in OUTCOMES, call.outcome
        self.calls.append((call.supplier_id, call.outcome))
        self.details.append((call.supplier_id, call.outcome, call.order_id, call.op, call.failover))

    def breaker_transition(self, supplier_id: str, old: str, new: str) -> None:
        self.transitions.append((supplier_id, old, new))


@dataclass
class Sim:
    """The simulator over HTTP: set knobs, read the order log and call counts."""

    base: str
    http: aiohttp.ClientSession

    def url(self, supplier: str) -> str:
        return f"{self.base}/s/{supplier}"

    def spec(self, supplier: str, **overrides: Any) -> SupplierSpec:
        fields: dict[str, Any] = {"timeout_s": 1.0, "max_concurrency": 50, "priority": 1}
        return SupplierSpec(id=supplier, base_url=self.url(supplier), **{**fields, **overrides})

    async def set(self, supplier: str, **knobs: Any) -> None:
        async with self.http.put(f"{self.base}/_sim/suppliers/{supplier}", json=knobs) as resp:
            assert resp.status == 200, await resp.text()

    async def orders(self) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.base}/_sim/orders") as resp:
            result: list[dict[str, Any]] = await resp.json()
            return result

    async def successes(self, order_id: str) -> list[str]:
        """Suppliers holding `order_id` as a success."""
        rows = await self.orders()
        return [
            r["supplier"] for r in rows if r["order_id"] == order_id and r["status"] == "success"
        ]

    async def stats(self) -> dict[str, dict[str, int]]:
        async with self.http.get(f"{self.base}/_sim/stats") as resp:
            result: dict[str, dict[str, int]] = await resp.json()
            return result

    async def calls(self, supplier: str) -> int:
        return (await self.stats()).get(supplier, {}).get("calls", 0)
