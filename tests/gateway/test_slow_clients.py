"""Slow clients cannot hold the served gateway: trickled headers and bodies are cut off in time.

`tests/support/served.py` sets keepalive_timeout_s = 2 (a connection without a complete request
head is closed 2 s after it opened) and body_timeout_s = 2 (a body not received within 2 s of
the head gets 408 and a close). 200 raw connections trickle one byte a second, half of them the
request head, half the body of a claim; meanwhile ordinary claims keep being granted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from gateway.valkey import keys
from tests.gateway.test_multiworker import create_campaign
from tests.support.served import API_KEY, serve

TIMEOUT_S = 2.0  # keepalive_timeout_s and body_timeout_s in tests/support/served.py
GRACE_S = 1.0
SLOW_EACH = 100
BODY_LENGTH = 100


def claim_head(host: str, campaign: str, i: int, content_length: int) -> bytes:
    return (
        f"POST /v1/campaigns/{campaign}/claims HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"Authorization: Bearer {API_KEY}\r\n"
        f"Idempotency-Key: slow-{i}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {content_length}\r\n"
        "\r\n"
    ).encode()


async def trickle_until_closed(
    port: int, sent_at_once: bytes, trickled: bytes
) -> tuple[float, bytes]:
    """Send `sent_at_once`, then `trickled` a byte a second; return (s from then to EOF, reply)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(sent_at_once)
    await writer.drain()
    started = time.monotonic()

    async def trickle() -> None:
        for byte in trickled:
            await asyncio.sleep(1.0)
            writer.write(bytes([byte]))
            await writer.drain()

    sender = asyncio.create_task(trickle())
    reply = b""
    try:
        async with asyncio.timeout(TIMEOUT_S + GRACE_S + 5):
            while chunk := await reader.read(4096):
                reply += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        closed_after = time.monotonic() - started
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
    return closed_after, reply


async def send_all_then_read(port: int, head: bytes, body: bytes) -> bytes:
    """Send a request as fast as the server takes it (it may stop reading), then read the reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(5):
                await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read(4096)
    finally:
        writer.close()


async def steady_claims(public: str, campaign: str, until: float) -> collections.Counter[int]:
    statuses: collections.Counter[int] = collections.Counter()
    async with aiohttp.ClientSession() as session:
        for i in range(1000):
            if time.monotonic() >= until:
                break
            async with session.post(
                f"{public}/v1/campaigns/{campaign}/claims",
                json={"user_id": f"fast-{i}", "device_id": f"fast-{i}"},
                headers={"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": f"fast-{i}"},
            ) as response:
                statuses[response.status] += 1
            await asyncio.sleep(0.05)
    return statuses


async def test_trickling_heads_and_bodies_are_closed_in_time_while_claims_succeed(
    tmp_path: Path, valkey_url: str, redis_client: Any
) -> None:
    with serve(tmp_path, valkey_url, workers=2) as served:
        async with aiohttp.ClientSession() as session:
            await create_campaign(session, served.admin, "busy", 10_000)
        split = urlsplit(served.public)
        assert split.port is not None
        host = split.netloc
        body = b'{"user_id": "slow", "device_id": "slow"}'.ljust(BODY_LENGTH)
        heads = [
            trickle_until_closed(split.port, b"", claim_head(host, "busy", i, BODY_LENGTH) + body)
            for i in range(SLOW_EACH)
        ]
        bodies = [
            trickle_until_closed(
                split.port, claim_head(host, "busy", SLOW_EACH + i, BODY_LENGTH), body
            )
            for i in range(SLOW_EACH)
        ]
        fast = steady_claims(served.public, "busy", time.monotonic() + TIMEOUT_S + GRACE_S + 0.5)
        statuses, *slow = await asyncio.gather(fast, *heads, *bodies)
        # The short lingering close still lets a client pushing an oversized body read its 413.
        big = await send_all_then_read(
            split.port, claim_head(host, "busy", 0, 1_000_000), b" " * 200_000
        )
        assert big.startswith(b"HTTP/1.1 413 "), big[:200]

    head_results, body_results = slow[:SLOW_EACH], slow[SLOW_EACH:]
    assert statuses[201] >= 20 and set(statuses) == {201}, statuses
    for closed_after, reply in head_results:
        assert TIMEOUT_S - 0.5 <= closed_after <= TIMEOUT_S + GRACE_S, closed_after
        assert reply == b""  # a request never completed gets no answer, just the close
    for closed_after, reply in body_results:
        assert closed_after <= TIMEOUT_S + GRACE_S, closed_after
        assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
        assert b'"code":"request_timeout"' in reply
    # Nothing trickled was decided: only the steady claims were granted.
    granted = await redis_client.hget(keys.campaign(keys.shard_tag("busy"), "busy"), "granted")
    assert int(granted) == statuses[201]
