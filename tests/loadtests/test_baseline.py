"""The benchmark's baseline server against the real Valkey: exact counts, idempotent replays."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
import redis.asyncio as aredis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from bench import baseline
from bench.report import stock_breach
from bench.wrk import parse

Client = Callable[..., AbstractAsyncContextManager[TestClient]]


@pytest.fixture
def make_client(valkey_url: str, redis_client: aredis.Redis) -> Client:
    """A started baseline app (on a flushed Valkey) with the given limits and seeded stock."""

    @asynccontextmanager
    async def start(
        limits: baseline.Limits | None = None, **stock: int
    ) -> AsyncIterator[TestClient]:
        app = baseline.create_app(valkey_url, limits, seed_stock=stock)
        async with TestClient(TestServer(app)) as client:
            yield client

    return start


async def claim(client: TestClient, user: str, key: str, campaign: str = "c1") -> ClientResponse:
    body = {"user_id": user, "device_id": f"d-{user}"}
    return await client.post(
        f"/v1/campaigns/{campaign}/claims", json=body, headers={"Idempotency-Key": key}
    )


async def test_concurrent_claims_grant_exactly_the_stock(
    make_client: Client, redis_client: aredis.Redis
) -> None:
    async with make_client(c1=17) as client:
        answers = await asyncio.gather(*(claim(client, f"u{i}", f"k{i}") for i in range(80)))
        bodies = [await a.json() for a in answers]
    statuses = Counter(a.status for a in answers)
    assert statuses == {201: 17, 409: 63}
    assert {b["error"]["code"] for b in bodies if "error" in b} == {"sold_out"}
    assert len({b["claim_id"] for b in bodies if "claim_id" in b}) == 17
    stats = await baseline.read_stats(redis_client, "c1")
    assert stats == {"stock_added": 17, "stock_left": 0, "granted": 17}
    assert stock_breach(stats) == ""
    assert await redis_client.xlen(baseline.key("c1", "events")) == 80


async def test_replay_returns_the_first_answer(make_client: Client) -> None:
    async with make_client(c1=5) as client:
        first = await claim(client, "alice", "key-1")
        again = await claim(client, "alice", "key-1")
        other_body = await claim(client, "bob", "key-1")
        second_grant = await claim(client, "alice", "key-2")
        assert (first.status, again.status) == (201, 201)
        assert await again.json() == await first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in first.headers
        assert other_body.status == 422
        assert (await second_grant.json())["error"]["code"] == "limit_reached"
        replayed_rejection = await claim(client, "alice", "key-2")
        assert replayed_rejection.status == 409
        assert replayed_rejection.headers["Idempotent-Replayed"] == "true"


async def test_grant_body_and_voucher(make_client: Client, redis_client: aredis.Redis) -> None:
    async with make_client(c1=1) as client:
        doc = await (await claim(client, "carol", "k")).json()
    assert set(doc) == {"claim_id", "campaign_id", "user_id", "voucher"}
    assert (doc["campaign_id"], doc["user_id"]) == ("c1", "carol")
    assert doc["voucher"]["expires_at"].endswith("Z")
    voucher = await redis_client.hgetall(baseline.key("c1", "voucher", doc["voucher"]["code"]))
    assert voucher[b"claim_id"].decode() == doc["claim_id"]


async def test_sliding_window_limits_and_bad_input(make_client: Client) -> None:
    limits = baseline.Limits(per_user=2, allowance=10)
    async with make_client(limits, c1=10) as client:
        statuses = [(await claim(client, "dave", f"k{i}")).status for i in range(3)]
        assert statuses == [201, 201, 429]
        limited = await claim(client, "dave", "k9")
        assert limited.headers["Retry-After"] == "60"
        bad = await client.post(
            "/v1/campaigns/c1/claims", data=b"{", headers={"Idempotency-Key": "x"}
        )
        no_key = await client.post(
            "/v1/campaigns/c1/claims", json={"user_id": "u", "device_id": "d"}
        )
        assert (bad.status, no_key.status) == (400, 400)


def test_stock_breach_messages() -> None:
    assert stock_breach({"stock_added": 5, "stock_left": 0, "granted": 6}).startswith("oversold")
    assert stock_breach({"stock_added": 5, "stock_left": 1, "granted": 3}).startswith(
        "stock mismatch"
    )


WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:18090/v1/campaigns/bench/claims
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    54.31ms   30.77ms   1.20s    93.73%
    Req/Sec     1.24k   313.39     1.92k    80.00%
  Latency Distribution
     50%  812.00us
     75%   54.26ms
     90%   60.90ms
     99%    1.20s
  3721 requests in 3.01s, 1.15MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 3700
Requests/sec:   1234.63
Transfer/sec:    390.64KB
"""


def test_wrk_report_is_parsed() -> None:
    result = parse(WRK_OUTPUT)
    assert (result.requests, result.seconds, result.rps) == (3721, 3.01, 1234.63)
    assert (result.p50_ms, result.p99_ms) == (pytest.approx(0.812), 1200.0)
    assert (result.non_2xx, result.socket_errors) == (3700, 5)
    with pytest.raises(ValueError, match="unexpected wrk output"):
        parse("wrk: connection refused")
