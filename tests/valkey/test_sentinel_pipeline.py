"""The auto-pipeline's part in following a primary: the Sentinel URL, asking the Sentinels,
and leaving a node that answers READONLY. Against real Valkey processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import ResponseError

from gateway.valkey import sentinel
from gateway.valkey.autopipe import AutoPipeline
from gateway.valkey.calls import NotSent
from tests.support.sentinel import Node, start_pair, stop_nodes
from tests.support.served import free_port


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_primary_credentials() -> None:
    found = sentinel.parse("redis+sentinel://gw:s%40cret@10.0.0.5:26379,[::1]:26380/flash")
    assert found.sentinels == [("10.0.0.5", 26379), ("::1", 26380)]
    assert found.service == "flash"
    assert (found.username, found.password) == ("gw", "s@cret")
    plain = sentinel.parse("redis+sentinel://127.0.0.1:26379/gw")
    assert (plain.username, plain.password) == (None, None)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    primary, replica = start_pair(tmp_path / "pair")
    try:
        yield primary, replica
    finally:
        stop_nodes([primary, replica])


async def test_a_readonly_reply_drops_the_connection_so_the_next_call_reconnects(
    pair: tuple[Node, Node],
) -> None:
    _, replica = pair
    pipe = AutoPipeline(f"redis://127.0.0.1:{replica.port}/0", 1.0)
    try:
        assert await pipe.execute("PING") == b"PONG"
        with pytest.raises(ResponseError, match=r"^READONLY"):
            await pipe.execute("SET", "k", "v")
        assert pipe._transport is None  # given up: the next call connects afresh
        assert await pipe.execute("GET", "k") is None
        assert pipe._transport is not None
    finally:
        await pipe.aclose()


async def test_no_sentinel_answering_is_not_sent() -> None:
    """No Sentinel to ask: the call never reached Valkey (503 without Outcome-Unknown)."""
    pipe = AutoPipeline(f"redis+sentinel://127.0.0.1:{free_port()}/gw", 0.5)
    try:
        with pytest.raises(NotSent):
            await pipe.execute("PING")
    finally:
        await pipe.aclose()
