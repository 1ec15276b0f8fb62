"""Failover, breakers and bulkheads of the pool, against the simulator over real HTTP."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest

from supplier_pool.breaker import BreakerConfig, State
from supplier_pool.pool import (
    Delivered,
    Failed,
    Pending,
    SupplierCall,
    SupplierPool,
    SupplierSpec,
    Unavailable,
)
from tests.supplier_pool.helpers import FakeClock, RecordingObserver, Sim

MakePool = Callable[..., SupplierPool]
TRIP_FAST = BreakerConfig(window_size=4, minimum_calls=2, wait_in_open_s=30.0)


def delivered_by(result: Delivered | Pending | Unavailable) -> str:
    assert isinstance(result, Delivered), result
    return result.supplier_id


async def test_delivers_through_the_first_supplier(sim: Sim, make_pool: MakePool) -> None:
    pool = make_pool([sim.spec("alpha"), sim.spec("beta")])
    result = await pool.deliver("o-1", "sku", "acct", ["alpha", "beta"])
    assert isinstance(result, Delivered) and result.supplier_id == "alpha"
    assert result.supplier_ref == "alpha-1"
    assert await sim.calls("beta") == 0


async def test_fails_over_on_a_failed_answer(sim: Sim, make_pool: MakePool) -> None:
    await sim.set("alpha", failure_rate=1.0)
    observer = RecordingObserver()
    pool = make_pool([sim.spec("alpha"), sim.spec("beta")], observer=observer)
    result = await pool.deliver("o-1", "sku", "acct", ["alpha", "beta"])
    assert result == Delivered("beta", "beta-1")
    assert observer.calls == [("alpha", "failed"), ("beta", "success")]
    assert pool.breaker("alpha").snapshot()["failure_rate"] == 0.0  # a healthy answer


async def test_tries_suppliers_by_priority_then_list_order(sim: Sim, make_pool: MakePool) -> None:
    for name in ("alpha", "beta", "gamma"):
        await sim.set(name, failure_rate=1.0)
    observer = RecordingObserver()
    specs = [sim.spec("alpha", priority=2), sim.spec("beta", priority=1), sim.spec("gamma")]
    pool = make_pool(specs, observer=observer)
    await pool.deliver("o-1", "sku", "acct", ["alpha", "gamma", "beta", "nobody"])
    assert [sid for sid, _ in observer.calls] == ["gamma", "beta", "alpha"]


async def test_calls_before_attempt_just_before_each_supplier(
    sim: Sim, make_pool: MakePool
) -> None:
    await sim.set("alpha", failure_rate=1.0)
    pool = make_pool([sim.spec("alpha"), sim.spec("beta")])
    seen: list[tuple[str, int]] = []

    async def before(supplier_id: str) -> None:
        seen.append((supplier_id, await sim.calls(supplier_id)))

    await pool.deliver("o-1", "sku", "acct", ["alpha", "beta"], before_attempt=before)
    assert seen == [("alpha", 0), ("beta", 0)]


async def test_processing_answer_is_pending_at_that_supplier(sim: Sim, make_pool: MakePool) -> None:
    await sim.set("alpha", processing_s=60)
    pool = make_pool([sim.spec("alpha"), sim.spec("beta")])
    assert await pool.deliver("o-1", "sku", "acct", ["alpha", "beta"]) == Pending("alpha")
    assert await sim.calls("beta") == 0


async def test_timeout_after_commit_is_found_by_the_query(sim: Sim, make_pool: MakePool) -> None:
    await sim.set("alpha", timeout_rate=1.0, timeout_s=5.0, commit_before_timeout=True)
    observer = RecordingObserver()
    pool = make_pool([sim.spec("alpha", timeout_s=0.2), sim.spec("beta")], observer=observer)
    result = await pool.deliver("o-1", "sku", "acct", ["alpha", "beta"])
    assert isinstance(result, Delivered) and result.supplier_id == "alpha"
    assert await sim.successes("o-1") == ["alpha"]
    assert observer.calls == [("alpha", "unknown"), ("alpha", "success")]
    assert pool.breaker("alpha").snapshot()["failure_rate"] == 1.0


async def test_timeout_before_commit_is_not_found_and_fails_over(
    sim: Sim, make_pool: MakePool
) -> None:
    await sim.set("alpha", timeout_rate=1.0, timeout_s=5.0)
    observer = RecordingObserver()
    pool = make_pool([sim.spec("alpha", timeout_s=0.2), sim.spec("beta")], observer=observer)
    result = await pool.deliver("o-1", "sku", "acct", ["alpha", "beta"])
    assert isinstance(result, Delivered) and result.supplier_id == "beta"
    assert observer.calls == [("alpha", "unknown"), ("alpha", "not_found"), ("beta", "success")]
    assert await sim.successes("o-1") == ["beta"]


async def test_the_observer_learns_each_call_s_order_kind_and_whether_it_failed_over(
    sim: Sim, make_pool: MakePool
) -> None:
    await sim.set("alpha", timeout_rate=1.0, timeout_s=5.0)
    observer = RecordingObserver()
    pool = make_pool([sim.spec("alpha", timeout_s=0.2), sim.spec("beta")], observer=observer)
    await pool.deliver("o-1", "sku", "acct", ["alpha", "beta"])
    pool.force_open("alpha")
    await pool.deliver("o-2", "sku", "acct", ["alpha", "beta"])
    pool.reset("alpha")
    await pool.settle("o-1", "beta")  # the reconciler's question
    assert observer.details == [
        ("alpha", "unknown", "o-1", "place", False),
        ("alpha", "not_found", "o-1", "query", False),
        ("beta", "success", "o-1", "place", True),
        ("alpha", "rejected_open", "o-2", "place", False),
        ("beta", "success", "o-2", "place", True),  # alpha passed over: its breaker refused
        ("beta", "success", "o-1", "query", False),
    ]
    stats = await sim.stats()
    assert (stats["alpha"]["post"], stats["alpha"]["get"]) == (1, 1)
    assert (stats["beta"]["post"], stats["beta"]["get"]) == (2, 1)


async def test_a_query_that_cannot_connect_is_unreachable(
    make_pool: MakePool, refused_url: str
) -> None:
    observer = RecordingObserver()
    pool = make_pool([SupplierSpec(id="gone", base_url=refused_url)], observer=observer)
    assert await pool.settle("o-1", "gone") == Pending("gone")
    assert observer.details == [("gone", "unreachable", "o-1", "query", False)]


async def test_a_call_cancelled_in_flight_is_reported_unknown_without_a_breaker_verdict(
    sim: Sim, make_pool: MakePool
) -> None:
    await sim.set("alpha", latency_ms=2000)
    observer = RecordingObserver()
    pool = make_pool([sim.spec("alpha", timeout_s=5.0)], observer=observer)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await pool.deliver("o-1", "sku", "acct", ["alpha"])
    assert observer.details == [("alpha", "unknown", "o-1", "place", False)]
    assert pool.breaker("alpha").snapshot()["calls"] == 0


async def test_unknown_outcome_whose_query_fails_is_pending_and_goes_no_further(
    sim: Sim, make_pool: MakePool
) -> None:
    await sim.set("alpha", error_rate=1.0)
    pool = make_pool([sim.spec("alpha"), sim.spec("beta")])
    assert await pool.deliver("o-1", "sku", "acct", ["alpha", "beta"]) == Pending("alpha")
    stats = await sim.stats()
    assert (stats["alpha"]["post"], stats["alpha"]["get"]) == (1, 1)
    assert stats["beta"] == {}


async def test_a_supplier_answering_503_is_pending_not_failed_over(
    sim: Sim, make_pool: MakePool
) -> None:
    await sim.set("alpha", down=True)
    pool = make_pool([sim.spec("alpha"), sim.spec("beta")])
    assert await pool.deliver("o-1", "sku", "acct", ["alpha", "beta"]) == Pending("alpha")
    assert await sim.calls("beta") == 0


async def test_refused_connection_fails_over_at_once(
    sim: Sim, make_pool: MakePool, refused_url: str
) -> None:
    observer = RecordingObserver()
    gone = SupplierSpec(id="gone", base_url=refused_url, timeout_s=1.0)
    pool = make_pool([gone, sim.spec("beta", priority=2)], observer=observer)
    result = await pool.deliver("o-1", "sku", "acct", ["gone", "beta"])
    assert isinstance(result, Delivered) and result.supplier_id == "beta"
    assert observer.calls == [("gone", "unreachable"), ("beta", "success")]


async def test_all_unreachable_is_unavailable(make_pool: MakePool, refused_url: str) -> None:
    specs = [SupplierSpec(id=s, base_url=refused_url, timeout_s=1.0) for s in ("a", "b")]
    pool = make_pool(specs)
    assert await pool.deliver("o-1", "sku", "acct", ["a", "b"]) == Unavailable()


async def test_no_known_supplier_is_unavailable(make_pool: MakePool) -> None:
    pool = make_pool([])
    assert await pool.deliver("o-1", "sku", "acct", ["nobody"]) == Unavailable()


async def test_all_down_and_open_is_unavailable_without_a_call(
    sim: Sim, make_pool: MakePool, clock: FakeClock
) -> None:
    for name in ("alpha", "beta"):
        await sim.set(name, down=True)
    pool = make_pool([sim.spec("alpha"), sim.spec("beta")], breaker_config=TRIP_FAST, clock=clock)
    for i in range(2):  # down suppliers: each attempt is unknown and stays pending
        await pool.deliver(f"o-{i}", "sku", "acct", ["alpha"])
        await pool.deliver(f"o-{i}", "sku", "acct", ["beta"])
    assert [pool.breaker(s).state for s in ("alpha", "beta")] == [State.OPEN, State.OPEN]
    before = await sim.stats()
    assert await pool.deliver("o-9", "sku", "acct", ["alpha", "beta"]) == Unavailable()
    assert await sim.stats() == before


async def test_breaker_opens_fails_fast_half_opens_and_closes(
    sim: Sim, make_pool: MakePool, clock: FakeClock
) -> None:
    await sim.set("alpha", failure_rate=0.0, timeout_rate=1.0, timeout_s=5.0)
    observer = RecordingObserver()
    pool = make_pool(
        [sim.spec("alpha", timeout_s=0.2), sim.spec("beta", priority=2)],
        breaker_config=TRIP_FAST,
        clock=clock,
        observer=observer,
    )
    for i in range(2):
        assert delivered_by(await pool.deliver(f"o-{i}", "s", "a", ["alpha", "beta"])) == "beta"
    assert pool.breaker("alpha").state is State.OPEN
    alpha_calls = await sim.calls("alpha")
    result = await pool.deliver("o-2", "s", "a", ["alpha", "beta"])
    assert result == Delivered("beta", "beta-3")
    assert await sim.calls("alpha") == alpha_calls  # failed fast: no call reached alpha
    assert ("alpha", "rejected_open") in observer.calls

    await sim.set("alpha", timeout_rate=0.0)
    clock.advance(TRIP_FAST.wait_in_open_s)
    for i in range(3, 5):  # two probes succeed
        assert delivered_by(await pool.deliver(f"o-{i}", "s", "a", ["alpha"])) == "alpha"
    assert pool.breaker("alpha").state is State.CLOSED
    assert ("alpha", "open", "half_open") in observer.transitions
    assert observer.transitions[-1] == ("alpha", "half_open", "closed")


async def test_failed_probe_reopens_the_breaker(
    sim: Sim, make_pool: MakePool, clock: FakeClock
) -> None:
    await sim.set("alpha", error_rate=1.0)
    pool = make_pool([sim.spec("alpha")], breaker_config=TRIP_FAST, clock=clock)
    for i in range(2):
        await pool.deliver(f"o-{i}", "s", "a", ["alpha"])
    clock.advance(TRIP_FAST.wait_in_open_s)
    assert await pool.deliver("o-2", "s", "a", ["alpha"]) == Pending("alpha")
    assert pool.breaker("alpha").state is State.OPEN


async def test_forced_open_and_closed(sim: Sim, make_pool: MakePool, clock: FakeClock) -> None:
    pool = make_pool([sim.spec("alpha"), sim.spec("beta")], clock=clock)
    pool.force_open("alpha")
    assert delivered_by(await pool.deliver("o-1", "s", "a", ["alpha", "beta"])) == "beta"
    assert await sim.calls("alpha") == 0
    pool.force_closed("alpha")
    assert delivered_by(await pool.deliver("o-2", "s", "a", ["alpha", "beta"])) == "alpha"
    pool.reset("alpha")
    assert pool.breaker("alpha").state is State.CLOSED


async def test_bulkhead_rejects_the_call_beyond_max_concurrency(
    sim: Sim, make_pool: MakePool
) -> None:
    await sim.set("alpha", latency_ms=300)
    observer = RecordingObserver()
    pool = make_pool(
        [sim.spec("alpha", max_concurrency=2), sim.spec("beta", priority=2)], observer=observer
    )
    admitted = asyncio.Semaphore(0)

    async def before(supplier_id: str) -> None:
        admitted.release()

    slow = [
        asyncio.create_task(pool.deliver(f"o-{i}", "s", "a", ["alpha"], before)) for i in range(2)
    ]
    for _ in range(2):
        await admitted.acquire()  # both hold an alpha slot now
    assert [s["in_flight"] for s in pool.snapshot()] == [2, 0]
    assert await pool.deliver("o-3", "s", "a", ["alpha"]) == Unavailable()
    third = await pool.deliver("o-4", "s", "a", ["alpha", "beta"])
    assert isinstance(third, Delivered) and third.supplier_id == "beta"
    assert [delivered_by(r) for r in await asyncio.gather(*slow)] == ["alpha", "alpha"]
    assert observer.calls.count(("alpha", "rejected_bulkhead")) == 2
    assert pool.snapshot()[0]["in_flight"] == 0
    assert pool.breaker("alpha").snapshot()["calls"] == 2  # rejections are not breaker calls


async def test_before_attempt_failure_frees_the_slot_and_the_probe(
    sim: Sim, make_pool: MakePool, clock: FakeClock
) -> None:
    pool = make_pool([sim.spec("alpha", max_concurrency=1)], breaker_config=TRIP_FAST, clock=clock)
    pool.breaker("alpha").transition_to(State.OPEN)
    clock.advance(TRIP_FAST.wait_in_open_s)

    async def broken(supplier_id: str) -> None:
        raise RuntimeError("redis down")

    for _ in range(3):
        with pytest.raises(RuntimeError):
            await pool.deliver("o-1", "s", "a", ["alpha"], broken)
    assert await sim.calls("alpha") == 0
    assert pool.snapshot()[0]["in_flight"] == 0
    assert isinstance(await pool.deliver("o-1", "s", "a", ["alpha"]), Delivered)


async def test_200_concurrent_deliveries_never_deliver_twice(sim: Sim, make_pool: MakePool) -> None:
    await sim.set("alpha", timeout_rate=0.3, timeout_s=2.0, commit_before_timeout=True)
    await sim.set("beta", failure_rate=0.1)
    pool = make_pool(
        [
            # 1 s: only the simulator's 2 s hangs time out, not a slow CI machine's answers
            sim.spec("alpha", timeout_s=1.0, max_concurrency=300),
            sim.spec("beta", priority=2, max_concurrency=300),
            sim.spec("gamma", priority=3, max_concurrency=300),
        ]
    )
    ids = [f"r-{i}" for i in range(200)]
    results = await asyncio.gather(
        *(pool.deliver(oid, "s", "a", ["alpha", "beta", "gamma"]) for oid in ids)
    )
    assert all(isinstance(r, Delivered) for r in results), [
        r for r in results if not isinstance(r, Delivered)
    ]
    successes = Counter(
        (row["order_id"], row["supplier"])
        for row in await sim.orders()
        if row["status"] == "success"
    )
    assert sorted(oid for oid, _ in successes) == sorted(ids)  # exactly one success each
    assert all(n == 1 for n in successes.values())
    for oid, result in zip(ids, results, strict=True):
        assert (oid, delivered_by(result)) in successes
    assert (await sim.stats())["alpha"]["timeouts"] > 0


async def test_settle_learns_the_fate_of_a_pending_order(sim: Sim, make_pool: MakePool) -> None:
    pool = make_pool([sim.spec("alpha"), sim.spec("beta")])
    await sim.set("alpha", processing_s=0.2)
    assert await pool.deliver("o-1", "s", "a", ["alpha"]) == Pending("alpha")
    assert await pool.settle("o-1", "alpha") == Pending("alpha")
    await asyncio.sleep(0.25)  # the simulator's processing time, not a breaker wait
    assert await pool.settle("o-1", "alpha") == Delivered("alpha", "alpha-1")
    assert await pool.settle("never-sent", "alpha") == Failed()
    await sim.set("beta", failure_rate=1.0)
    await pool.deliver("o-2", "s", "a", ["beta"])
    assert await pool.settle("o-2", "beta") == Failed()
    await sim.set("alpha", error_rate=1.0)
    assert await pool.settle("o-1", "alpha") == Pending("alpha")
    assert await pool.settle("o-1", "removed-supplier") == Pending("removed-supplier")


async def test_snapshot_lists_every_supplier(sim: Sim, make_pool: MakePool) -> None:
    pool = make_pool([sim.spec("alpha", priority=3), sim.spec("beta")])
    pool.force_open("beta")
    snap = {s["id"]: s for s in pool.snapshot()}
    assert snap["alpha"]["priority"] == 3 and snap["alpha"]["state"] == "closed"
    assert snap["beta"]["state"] == "forced_open"
    assert {"calls", "failure_rate", "slow_call_rate", "open_until"} <= set(snap["alpha"])


async def test_a_broken_observer_never_breaks_a_delivery(sim: Sim, make_pool: MakePool) -> None:
    class Broken:
        def call_finished(self, call: SupplierCall) -> None:
            raise RuntimeError("metrics bug")

        def breaker_transition(self, supplier_id: str, old: str, new: str) -> None:
            raise RuntimeError("metrics bug")

    pool = make_pool([sim.spec("alpha")], observer=Broken())
    pool.force_open("alpha")
    pool.reset("alpha")
    assert isinstance(await pool.deliver("o-1", "s", "a", ["alpha"]), Delivered)


def test_duplicate_supplier_ids_are_refused(sim: Sim) -> None:
    with pytest.raises(ValueError, match="alpha"):
        SupplierPool([sim.spec("alpha"), sim.spec("alpha")])


async def test_a_cancelled_delivery_frees_its_slot_and_probe_permit(
    sim: Sim, make_pool: MakePool, clock: FakeClock
) -> None:
    await sim.set("alpha", latency_ms=5000)
    pool = make_pool([sim.spec("alpha", max_concurrency=1)], breaker_config=TRIP_FAST, clock=clock)
    pool.breaker("alpha").transition_to(State.OPEN)
    clock.advance(TRIP_FAST.wait_in_open_s)
    for _ in range(TRIP_FAST.permitted_calls_in_half_open + 1):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await pool.deliver("o-1", "s", "a", ["alpha"])
    assert pool.snapshot()[0]["in_flight"] == 0
    assert pool.breaker("alpha").state is State.HALF_OPEN
    assert pool.breaker("alpha").try_acquire()  # no permit was lost to the cancellations
