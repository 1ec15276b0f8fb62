"""The supplier simulator over real HTTP: protocol, fault knobs, order log, CLI under uvloop."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import aiohttp
import pytest

from supplier_pool.simulator import Knobs, running_simulator
from tests.supplier_pool.helpers import Sim


async def post(sim: Sim, supplier: str, order_id: str, **extra: str) -> tuple[int, Any]:
    body = {"order_id": order_id, "sku": "sku-1", "account": "acct-1", **extra}
    async with sim.http.post(f"{sim.url(supplier)}/orders", json=body) as resp:
        return resp.status, await resp.json()


async def get(sim: Sim, supplier: str, order_id: str) -> tuple[int, Any]:
    async with sim.http.get(f"{sim.url(supplier)}/orders/{order_id}") as resp:
        return resp.status, await resp.json()


async def test_same_order_id_returns_the_same_order(sim: Sim) -> None:
    status, first = await post(sim, "alpha", "o-1")
    assert status == 200
    assert first["status"] == "success" and first["supplier_ref"]
    assert await post(sim, "alpha", "o-1") == (200, first)
    assert await get(sim, "alpha", "o-1") == (200, first)
    assert len(await sim.orders()) == 1


async def test_each_supplier_has_its_own_order_namespace(sim: Sim) -> None:
    await post(sim, "alpha", "o-1")
    status, _ = await get(sim, "beta", "o-1")
    assert status == 404


async def test_order_log_records_supplier_account_and_time(sim: Sim) -> None:
    await post(sim, "beta", "o-9", account="13800000000")
    [row] = await sim.orders()
    assert row["supplier"] == "beta" and row["order_id"] == "o-9"
    assert row["account"] == "13800000000" and row["status"] == "success"
    assert row["created_at"] > 1_600_000_000


async def test_failure_rate_answers_failed(sim: Sim) -> None:
    await sim.set("alpha", failure_rate=1.0)
    status, body = await post(sim, "alpha", "o-1")
    assert (status, body["status"]) == (200, "failed")


async def test_error_rate_answers_500_and_creates_nothing(sim: Sim) -> None:
    await sim.set("alpha", error_rate=1.0)
    status, _ = await post(sim, "alpha", "o-1")
    assert status == 500
    assert await sim.orders() == []
    assert (await sim.stats())["alpha"]["errors"] == 1


async def test_processing_orders_become_success_after_processing_s(sim: Sim) -> None:
    await sim.set("alpha", processing_s=0.2)
    _, body = await post(sim, "alpha", "o-1")
    assert body["status"] == "processing"
    await asyncio.sleep(0.25)  # the simulator's own clock, not a breaker wait
    _, body = await get(sim, "alpha", "o-1")
    assert body["status"] == "success"


async def test_timeout_without_commit_creates_nothing(sim: Sim) -> None:
    await sim.set("alpha", timeout_rate=1.0, timeout_s=0.05)
    status, _ = await post(sim, "alpha", "o-1")
    assert status == 504
    assert await sim.orders() == []


async def test_timeout_after_commit_has_created_the_order(sim: Sim) -> None:
    await sim.set("alpha", timeout_rate=1.0, timeout_s=5.0, commit_before_timeout=True)
    timeout = aiohttp.ClientTimeout(total=0.2)
    body = {"order_id": "o-1", "sku": "s", "account": "a"}
    with pytest.raises(asyncio.TimeoutError):
        await sim.http.post(f"{sim.url('alpha')}/orders", json=body, timeout=timeout)
    assert await sim.successes("o-1") == ["alpha"]
    assert (await sim.stats())["alpha"]["timeouts"] == 1


async def test_down_answers_503_to_everything(sim: Sim) -> None:
    await sim.set("alpha", down=True)
    assert (await post(sim, "alpha", "o-1"))[0] == 503
    assert (await get(sim, "alpha", "o-1"))[0] == 503


async def test_down_in_close_mode_drops_the_connection(sim: Sim) -> None:
    await sim.set("alpha", down=True, down_mode="close")
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(sim, "alpha", "o-1")


async def test_latency_delays_answers(sim: Sim) -> None:
    await sim.set("alpha", latency_ms=150, latency_jitter_ms=50)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await post(sim, "alpha", "o-1")
    assert 0.15 <= loop.time() - started < 1.0


async def test_knobs_change_partially_and_reject_bad_values(sim: Sim) -> None:
    await sim.set("alpha", latency_ms=5)
    await sim.set("alpha", failure_rate=0.5)
    async with sim.http.get(f"{sim.base}/_sim/suppliers") as resp:
        knobs = (await resp.json())["alpha"]
    assert (knobs["latency_ms"], knobs["failure_rate"]) == (5, 0.5)
    for bad in ({"failure_rate": 2}, {"nope": 1}, {"down": "yes"}, [1]):
        async with sim.http.put(f"{sim.base}/_sim/suppliers/alpha", json=bad) as resp:
            assert resp.status == 400, bad


async def test_put_creates_a_new_supplier(sim: Sim) -> None:
    await sim.set("delta", latency_ms=0)
    assert (await post(sim, "delta", "o-1"))[0] == 200


async def test_unknown_supplier_is_404(sim: Sim) -> None:
    assert (await post(sim, "nobody", "o-1"))[0] == 404


async def test_bad_order_body_is_400(sim: Sim) -> None:
    async with sim.http.post(f"{sim.url('alpha')}/orders", data=b"{") as resp:
        assert resp.status == 400


async def test_stats_count_calls_and_clearing_forgets(sim: Sim) -> None:
    await post(sim, "alpha", "o-1")
    await get(sim, "alpha", "o-1")
    stats = (await sim.stats())["alpha"]
    assert (stats["calls"], stats["post"], stats["get"], stats["created"]) == (2, 1, 1, 1)
    async with sim.http.delete(f"{sim.base}/_sim/orders") as resp:
        assert resp.status == 204
    async with sim.http.delete(f"{sim.base}/_sim/stats") as resp:
        assert resp.status == 204
    assert await sim.orders() == []
    assert (await get(sim, "alpha", "o-1"))[0] == 404
    assert (await sim.stats())["alpha"] == {"calls": 1, "get": 1}


async def test_same_seed_gives_the_same_faults() -> None:
    async def outcomes() -> list[int]:
        knobs = {"alpha": Knobs(error_rate=0.5)}
        async with (
            running_simulator(suppliers=knobs, seed=42) as base,
            aiohttp.ClientSession() as http,
        ):
            sim = Sim(base, http)
            return [(await post(sim, "alpha", f"o-{i}"))[0] for i in range(20)]

    first = await outcomes()
    assert first == await outcomes()
    assert set(first) == {200, 500}


async def test_cli_serves_under_uvloop_and_stops_on_sigterm() -> None:
    code = "import sys; from supplier_pool.simulator import main; sys.exit(main(sys.argv[1:]))"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *("--port", "0", "--supplier", "alpha", "--knobs", '{"beta": {"latency_ms": 1}}'),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        base = line.rsplit(" ", 1)[1].strip()
        async with aiohttp.ClientSession() as http:
            sim = Sim(base, http)
            assert (await post(sim, "beta", "o-1"))[0] == 200
            assert set(await sim.stats()) == {"alpha", "beta"}
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_rejects_bad_knobs() -> None:
    code = "import sys; from supplier_pool.simulator import main; sys.exit(main(sys.argv[1:]))"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *("--knobs", '{"alpha": {"error_rate": 3}}'),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"error_rate" in err
