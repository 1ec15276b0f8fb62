"""Failover across suppliers, with a breaker and a bulkhead per supplier (SPEC §3.2.1).

The one rule that matters most: once a call's outcome at a supplier is unknown, the pool asks
that supplier what became of the order before it would ever try another one; if it cannot
learn, the answer is `Pending` and no other supplier is called. That is what keeps a slow
supplier from causing a double delivery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from supplier_pool.breaker import BreakerConfig, CircuitBreaker, State
from supplier_pool.client import (
    GenericJsonAdapter,
    NotSent,
    OrderResult,
    SupplierAdapter,
    UnknownOutcome,
)

log = logging.getLogger(__name__)


class SupplierSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One upstream supplier as configured; priority 1 is tried first."""

    id: str
    base_url: str
    timeout_s: float = 3.0
    max_concurrency: int = 50
    priority: int = 1


class Delivered(msgspec.Struct, frozen=True):
    """The supplier confirmed the order as a success."""

    supplier_id: str
    supplier_ref: str
    # The supplier's redemption link, for link benefits ('' otherwise); never in a repr.
    link: str = ""

    def __repr__(self) -> str:
        return f"Delivered({self.supplier_id!r}, {self.supplier_ref!r})"


class Pending(msgspec.Struct, frozen=True):
    """The order's fate at `supplier_id` is not known yet; only that supplier may hold it."""

    supplier_id: str


class Unavailable(msgspec.Struct, frozen=True):
    """No supplier delivered and none may hold the order."""


class Failed(msgspec.Struct, frozen=True):
    """The supplier definitely did not deliver the order."""


class SupplierCall(msgspec.Struct, frozen=True):
    """One supplier call (or refusal) as the pool reports it; OUTCOMES lists the outcomes.

    `op` is "place" (POST the order; refusals too) or "query" (GET it back). `failover` marks
    the place call at a supplier the order reached only after a higher-priority one was passed
    over (refused by its breaker or bulkhead, or answered a definite no).
    """

    supplier_id: str
    outcome: str
    seconds: float
    order_id: str = ""
    op: str = "place"
    failover: bool = False

    @property
    def sent(self) -> bool:
        """Whether the call left the gateway: a breaker's or bulkhead's refusal did not, so it
        has no latency."""
        return self.outcome not in NOT_SENT


class PoolObserver(Protocol):
    """Receives one report per supplier call and per breaker transition (metrics, ledger)."""

    def call_finished(self, call: SupplierCall) -> None:
        """One supplier call (or refusal) ended."""

    def breaker_transition(self, supplier_id: str, old: str, new: str) -> None:
        """A breaker moved between two `State` values."""


class NullObserver:
    """An observer that ignores everything."""

    def call_finished(self, call: SupplierCall) -> None:
        """Ignore the report."""

    def breaker_transition(self, supplier_id: str, old: str, new: str) -> None:
        """Ignore the report."""


OUTCOMES = (
    "success",
    "failed",
    "processing",
    "unknown",
    "unreachable",
    "not_found",
    "rejected_open",
    "rejected_bulkhead",
)
"""Every outcome label `call_finished` may receive (bounded, for metrics)."""
NOT_SENT = ("rejected_open", "rejected_bulkhead")

AdapterFactory = Callable[[SupplierSpec], SupplierAdapter]
BeforeAttempt = Callable[[str], Awaitable[None]]


def generic_json_adapter(spec: SupplierSpec) -> SupplierAdapter:
    """The default factory: the built-in JSON dialect."""
    return GenericJsonAdapter(spec.id, spec.base_url, spec.timeout_s, spec.max_concurrency)


@dataclass(frozen=True)
class _Call:
    """What the observer learns of a call besides its supplier, outcome and duration."""

    order_id: str
    op: str = "place"
    failover: bool = False


@dataclass
class _Member:
    spec: SupplierSpec
    breaker: CircuitBreaker
    adapter: SupplierAdapter
    in_flight: int = 0


class SupplierPool:
    """Suppliers by id, each with its breaker, bulkhead and adapter."""

    def __init__(
        self,
        suppliers: Iterable[SupplierSpec],
        *,
        breaker_config: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        observer: PoolObserver | None = None,
        adapter_factory: AdapterFactory = generic_json_adapter,
    ) -> None:
        self.clock = clock
        self._observer = observer or NullObserver()
        self._members: dict[str, _Member] = {}
        for spec in suppliers:
            if spec.id in self._members:
                raise ValueError(f"duplicate supplier id {spec.id!r}")
            breaker = CircuitBreaker(spec.id, breaker_config, clock, self._on_transition)
            self._members[spec.id] = _Member(spec, breaker, adapter_factory(spec))

    @property
    def supplier_ids(self) -> list[str]:
        """Ids of every supplier in the pool, in configuration order."""
        return list(self._members)

    def breaker(self, supplier_id: str) -> CircuitBreaker:
        """The breaker of one supplier; KeyError if the pool has no such supplier."""
        return self._members[supplier_id].breaker

    async def deliver(
        self,
        order_id: str,
        sku: str,
        account: str,
        supplier_ids: Sequence[str],
        before_attempt: BeforeAttempt | None = None,
    ) -> Delivered | Pending | Unavailable:
        """Deliver through the first willing supplier; never two suppliers for one outcome.

        `before_attempt(supplier_id)` is awaited just before each supplier is called, so the
        caller can record where the order may land. Exceptions from it propagate.
        """
        for position, member in enumerate(self._candidates(supplier_ids)):
            if not self._admit(member, order_id):
                continue
            call = _Call(order_id, failover=position > 0)
            try:
                outcome = await self._attempt(member, call, sku, account, before_attempt)
            finally:
                member.in_flight -= 1
            if outcome is not None:
                return outcome
        return Unavailable()

    async def settle(self, order_id: str, supplier_id: str) -> Delivered | Pending | Failed:
        """Learn the fate of an order left pending at one supplier (for the reconciler).

        Breaker and bulkhead are bypassed: the reconciler paces itself and must learn facts.
        A supplier no longer in the pool stays Pending: nothing proves the order failed there.
        """
        member = self._members.get(supplier_id)
        if member is None:
            return Pending(supplier_id)
        try:
            result = await self._query(member, order_id)
        except UnknownOutcome:
            return Pending(supplier_id)
        if result is None or result.status == "failed":
            return Failed()
        if result.status == "success":
            return Delivered(supplier_id, result.supplier_ref, result.link)
        return Pending(supplier_id)

    def force_open(self, supplier_id: str) -> None:
        """Refuse every call to this supplier until force_closed() or reset()."""
        self._members[supplier_id].breaker.force_open()

    def force_closed(self, supplier_id: str) -> None:
        """Call this supplier whatever its figures, until force_open() or reset()."""
        self._members[supplier_id].breaker.force_closed()

    def reset(self, supplier_id: str) -> None:
        """Back to CLOSED with an empty window."""
        self._members[supplier_id].breaker.reset()

    def snapshot(self) -> list[dict[str, Any]]:
        """One dict per supplier: id, priority, concurrency figures and breaker figures."""
        return [
            {
                "id": m.spec.id,
                "priority": m.spec.priority,
                "in_flight": m.in_flight,
                "max_concurrency": m.spec.max_concurrency,
                **m.breaker.snapshot(),
            }
            for m in self._members.values()
        ]

    async def close(self) -> None:
        """Close every adapter; the pool is not used afterwards."""
        for member in self._members.values():
            try:
                await member.adapter.close()
            except Exception:
                log.exception("closing supplier adapter %s failed", member.spec.id)

    def _candidates(self, supplier_ids: Sequence[str]) -> list[_Member]:
        known = [self._members[s] for s in dict.fromkeys(supplier_ids) if s in self._members]
        return sorted(known, key=lambda m: m.spec.priority)  # stable: ties keep caller order

    def _admit(self, member: _Member, order_id: str) -> bool:
        # Bulkhead before breaker, so a full bulkhead never takes a half-open probe permit.
        sid = member.spec.id
        if member.in_flight >= member.spec.max_concurrency:
            self._report(sid, "rejected_bulkhead", 0.0, _Call(order_id))
            return False
        if not member.breaker.try_acquire():
            self._report(sid, "rejected_open", 0.0, _Call(order_id))
            return False
        member.in_flight += 1
        return True

    async def _attempt(
        self,
        member: _Member,
        call: _Call,
        sku: str,
        account: str,
        before_attempt: BeforeAttempt | None,
    ) -> Delivered | Pending | None:
        """One supplier's try: an outcome, or None for a definite no (try the next one)."""
        if before_attempt is not None:
            try:
                await before_attempt(member.spec.id)
            except BaseException:
                member.breaker.release()  # no call was made: give the probe permit back
                raise
        return await self._place(member, call, sku, account)

    async def _place(
        self, member: _Member, call: _Call, sku: str, account: str
    ) -> Delivered | Pending | None:
        sid = member.spec.id
        started = self.clock()
        try:
            result = await member.adapter.place_order(call.order_id, sku, account)
        except NotSent:
            self._record(member, "unreachable", started, call, failed=True)
            return None  # no request left this process: nothing to ask about
        except UnknownOutcome:
            self._record(member, "unknown", started, call, failed=True)
            return await self._resolve_unknown(member, call.order_id)
        except asyncio.CancelledError:
            # The request may have reached the supplier: reported as unknown so the call
            # counts match the supplier's, but no verdict on the supplier. The caller learned
            # from before_attempt where the order may be, and must treat it as pending there.
            member.breaker.release()
            self._report(sid, "unknown", self.clock() - started, call)
            raise
        except BaseException:
            member.breaker.release()  # an adapter bug: no verdict on the supplier either
            raise
        self._record(member, result.status, started, call, failed=False)
        return _verdict(sid, result)

    async def _resolve_unknown(self, member: _Member, order_id: str) -> Delivered | Pending | None:
        """After an unknown outcome: ask before moving on; if asking fails, stay Pending."""
        sid = member.spec.id
        try:
            result = await self._query(member, order_id)
        except UnknownOutcome:
            return Pending(sid)
        return None if result is None else _verdict(sid, result)

    async def _query(self, member: _Member, order_id: str) -> OrderResult | None:
        """GET the order: None for 404; UnknownOutcome propagates after being reported."""
        sid, call = member.spec.id, _Call(order_id, op="query")
        started = self.clock()
        try:
            result = await member.adapter.get_order(order_id)
        except (UnknownOutcome, asyncio.CancelledError) as exc:
            label = "unreachable" if isinstance(exc, NotSent) else "unknown"
            self._report(sid, label, self.clock() - started, call)
            raise
        outcome = "not_found" if result is None else result.status
        self._report(sid, outcome, self.clock() - started, call)
        return result

    def _record(
        self, member: _Member, outcome: str, started: float, call: _Call, *, failed: bool
    ) -> None:
        seconds = self.clock() - started
        if failed:
            member.breaker.on_failure(seconds)
        else:
            member.breaker.on_success(seconds)  # a "failed" answer is still a healthy call
        self._report(member.spec.id, outcome, seconds, call)

    def _report(self, supplier_id: str, outcome: str, seconds: float, call: _Call) -> None:
        # An observer bug must never turn a delivered order into an error for the caller.
        try:
            self._observer.call_finished(
                SupplierCall(supplier_id, outcome, seconds, call.order_id, call.op, call.failover)
            )
        except Exception:
            log.exception("pool observer failed on call_finished")

    def _on_transition(self, supplier_id: str, old: State, new: State) -> None:
        log.info("supplier %s breaker %s -> %s", supplier_id, old, new)
        try:
            self._observer.breaker_transition(supplier_id, str(old), str(new))
        except Exception:
            log.exception("pool observer failed on breaker_transition")


def _verdict(supplier_id: str, result: OrderResult) -> Delivered | Pending | None:
    if result.status == "success":
        return Delivered(supplier_id, result.supplier_ref, result.link)
    if result.status == "processing":
        return Pending(supplier_id)
    return None
