"""The generic JSON adapter against the real simulator (and one misbehaving server)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from supplier_pool.client import GenericJsonAdapter, NotSent, OrderResult, UnknownOutcome
from tests.supplier_pool.helpers import Sim


@pytest.fixture
async def alpha(sim: Sim) -> AsyncIterator[GenericJsonAdapter]:
    adapter = GenericJsonAdapter("alpha", sim.url("alpha"), timeout_s=0.5, max_concurrency=4)
    yield adapter
    await adapter.close()


async def test_place_then_get_returns_the_same_order(alpha: GenericJsonAdapter) -> None:
    placed = await alpha.place_order("o-1", "sku-1", "acct")
    assert placed == OrderResult("o-1", "success", placed.supplier_ref)
    assert placed.supplier_ref
    assert await alpha.get_order("o-1") == placed
    assert await alpha.place_order("o-1", "sku-1", "acct") == placed


async def test_get_of_an_order_never_seen_is_none(alpha: GenericJsonAdapter) -> None:
    assert await alpha.get_order("never") is None


async def test_order_ids_are_sent_as_one_path_segment(sim: Sim, alpha: GenericJsonAdapter) -> None:
    odd = "r/1?x=#ü %2F"
    await alpha.place_order(odd, "sku", "acct")
    assert (await alpha.get_order(odd)) is not None
    assert [row["order_id"] for row in await sim.orders()] == [odd]


async def test_5xx_is_an_unknown_outcome(sim: Sim, alpha: GenericJsonAdapter) -> None:
    await sim.set("alpha", error_rate=1.0)
    with pytest.raises(UnknownOutcome):
        await alpha.place_order("o-1", "sku", "acct")
    with pytest.raises(UnknownOutcome):
        await alpha.get_order("o-1")


async def test_timeout_is_an_unknown_outcome(sim: Sim, alpha: GenericJsonAdapter) -> None:
    await sim.set("alpha", timeout_rate=1.0, timeout_s=5.0)
    with pytest.raises(UnknownOutcome) as caught:
        await alpha.place_order("o-1", "sku", "acct")
    assert not isinstance(caught.value, NotSent)


async def test_dropped_connection_is_an_unknown_outcome(
    sim: Sim, alpha: GenericJsonAdapter
) -> None:
    await sim.set("alpha", down=True, down_mode="close")
    with pytest.raises(UnknownOutcome) as caught:
        await alpha.place_order("o-1", "sku", "acct")
    assert not isinstance(caught.value, NotSent)


async def test_refused_connection_is_not_sent(refused_url: str) -> None:
    adapter = GenericJsonAdapter("gone", refused_url, timeout_s=0.5, max_concurrency=1)
    try:
        with pytest.raises(NotSent):
            await adapter.place_order("o-1", "sku", "acct")
    finally:
        await adapter.close()


async def _garbage(request: web.Request) -> web.Response:
    answers = {
        "/bad/orders": web.Response(text="<html>oops</html>"),
        "/wrong-id/orders": web.json_response({"order_id": "other", "status": "success"}),
        "/bad-status/orders": web.json_response({"order_id": "o-1", "status": "done"}),
    }
    return answers[request.path]


@pytest.fixture
async def garbage_base() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/{kind}/orders", _garbage)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("kind", ["bad", "wrong-id", "bad-status"])
async def test_unparseable_or_foreign_body_is_an_unknown_outcome(
    garbage_base: str, kind: str
) -> None:
    adapter = GenericJsonAdapter("odd", f"{garbage_base}/{kind}", timeout_s=1, max_concurrency=1)
    try:
        with pytest.raises(UnknownOutcome):
            await adapter.place_order("o-1", "sku", "acct")
    finally:
        await adapter.close()


async def test_close_without_any_call_is_harmless() -> None:
    adapter = GenericJsonAdapter("idle", "http://127.0.0.1:1", timeout_s=1, max_concurrency=1)
    await adapter.close()
    await adapter.close()
