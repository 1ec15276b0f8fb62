"""The supplier pool's observer in the gateway: every call as a `supplier.call` event on its
redemption's stream, written in the background, kept while Valkey is away."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import redis.asyncio as aredis
from prometheus_client import REGISTRY

from gateway import codes
from gateway.redemptions.supplier_log import SupplierCallLog
from gateway.telemetry import tally
from gateway.valkey import keys
from supplier_pool.pool import SupplierCall
from tests.support.waiting import eventually


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def decoded(entries: list[Any]) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def test_each_call_is_an_event_on_its_redemption_s_stream(redis_client: Any) -> None:
    log = SupplierCallLog(redis_client, 10_000, clock=lambda: 1_767_323_045.5)
    rid = codes.new_redemption_id("EF")
    log.call_finished(SupplierCall("alpha", "unknown", 0.3004, order_id=rid))
    log.call_finished(SupplierCall("alpha", "not_found", 0.002, order_id=rid, op="query"))
    log.call_finished(SupplierCall("beta", "rejected_open", 0.0, order_id=rid, failover=True))
    # Not a redemption's order: counted in the metrics only.
    log.call_finished(SupplierCall("beta", "success", 0.05, order_id="not-a-redemption"))
    assert log.queued == 3
    await log.write_batch()
    assert log.queued == 0
    events = decoded(await redis_client.xrange(keys.events("EF")))
    common = {"type": "supplier.call", "ts": "2026-01-02T03:04:05.500Z", "redemption_id": rid}
    assert events == [
        common
        | {"supplier": "alpha", "outcome": "unknown", "op": "place", "failover": "0"}
        | {"latency_ms": "300"},
        common
        | {"supplier": "alpha", "outcome": "not_found", "op": "query", "failover": "0"}
        | {"latency_ms": "2"},
        # a refusal made no call: it has no latency
        common | {"supplier": "beta", "outcome": "rejected_open", "op": "place", "failover": "1"},
    ]


async def test_events_wait_while_valkey_is_away_and_are_written_once_it_answers(
    redis_client: Any,
) -> None:
    away = aredis.Redis.from_url(closed_port_url())
    log = SupplierCallLog(away, 10_000)
    rid = codes.new_redemption_id("EF")
    try:
        log.start()
        for outcome in ("unknown", "not_found"):
            log.call_finished(SupplierCall("alpha", outcome, 0.01, order_id=rid))
        await asyncio.sleep(0.3)  # a failed write, and the writer waiting to retry
        assert log.queued == 2
        log._redis = redis_client  # Valkey is back
        await eventually(lambda: log.queued == 0, within_s=3.0)
    finally:
        await log.close(1.0)
        await away.aclose()
    events = decoded(await redis_client.xrange(keys.events("EF")))
    assert [e["outcome"] for e in events] == ["unknown", "not_found"]  # in order, once each


async def test_close_writes_what_is_queued_before_the_writer_stops(redis_client: Any) -> None:
    log = SupplierCallLog(redis_client, 10_000)
    log.start()
    rid = codes.new_redemption_id("EF")
    for _ in range(1_000):  # more than one batch
        log.call_finished(SupplierCall("alpha", "success", 0.01, order_id=rid))
    await log.close(5.0)
    assert log.queued == 0
    assert await redis_client.xlen(keys.events("EF")) == 1_000


async def test_a_full_queue_drops_the_oldest_events(redis_client: Any) -> None:
    log = SupplierCallLog(redis_client, 10_000, max_queued=2)
    rid = codes.new_redemption_id("EF")
    for outcome in ("unknown", "not_found", "success"):
        log.call_finished(SupplierCall("alpha", outcome, 0.01, order_id=rid))
    await log.write_batch()
    events = decoded(await redis_client.xrange(keys.events("EF")))
    assert [e["outcome"] for e in events] == ["not_found", "success"]


@pytest.mark.parametrize("outcome", ["success", "rejected_bulkhead"])
async def test_the_metrics_count_every_call_and_failover(redis_client: Any, outcome: str) -> None:
    log = SupplierCallLog(redis_client, 10_000)
    calls = ("gateway_supplier_calls_total", {"supplier": "gamma", "outcome": outcome})
    failovers = ("gateway_supplier_failovers_total", {"supplier": "gamma"})
    before = [sample(*calls), sample(*failovers)]
    log.call_finished(SupplierCall("gamma", outcome, 0.01, order_id="o-1", failover=True))
    assert [sample(*calls), sample(*failovers)] == [before[0] + 1, before[1] + 1]


def sample(name: str, labels: dict[str, str]) -> float:
    tally.flush()
    return REGISTRY.get_sample_value(name, labels) or 0.0
