"""Claim answers written as one buffer (gateway/wire.py) are well-framed HTTP/1.1 on the wire.

Read over raw sockets, so framing is checked as a client library would not show it: one status
line, each header once, Content-Length matching the body, keep-alive honoured, and requests
the direct path does not take (HTTP/1.0) still answered by aiohttp.
"""

from __future__ import annotations

import asyncio
import uuid

import orjson

from tests.gateway.conftest import API_KEY, Gateway

Answer = tuple[str, list[tuple[str, str]], bytes]  # status line, headers in order, body


def claim_request(
    campaign: str, user: str, version: str = "1.1", extra: str = "", key: str | None = None
) -> bytes:
    body = orjson.dumps({"user_id": user, "device_id": f"{user}-phone"})
    return (
        f"POST /v1/campaigns/{campaign}/claims HTTP/{version}\r\n"
        "Host: gateway\r\n"
        f"Authorization: Bearer {API_KEY}\r\n"
        f"Idempotency-Key: {key or uuid.uuid4().hex}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}"
        "\r\n"
    ).encode() + body


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One HTTP answer: status line, headers in order (repeats kept), body by Content-Length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = [(name, value) for name, _, value in (line.partition(": ") for line in lines)]
    length = int(dict(headers)["Content-Length"])
    return status, headers, await asyncio.wait_for(reader.readexactly(length), 5)


async def connect(gateway: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    server = gateway.public.server
    assert server.port is not None
    return await asyncio.open_connection("127.0.0.1", server.port)


async def exchange(gateway: Gateway, requests: bytes, answers: int) -> list[Answer]:
    """Send `requests` at once on one connection (pipelined) and read `answers` answers."""
    reader, writer = await connect(gateway)
    try:
        writer.write(requests)
        return [await read_answer(reader) for _ in range(answers)]
    finally:
        writer.close()


async def test_a_granted_claim_is_one_well_framed_answer_and_keeps_the_connection(
    gateway: Gateway,
) -> None:
    campaign = await gateway.put_campaign(stock=5)
    pipelined = claim_request(campaign, "ann") + claim_request(campaign, "bob")
    answers = await exchange(gateway, pipelined, 2)
    for (status, headers, body), user in zip(answers, ("ann", "bob"), strict=True):
        assert status == "HTTP/1.1 201 Created"
        names = [name for name, _ in headers]
        assert sorted(set(names)) == sorted(names), names  # no header twice
        fields = dict(headers)
        assert fields["Content-Type"] == "application/json"
        assert fields["Date"].endswith(" GMT")
        assert len(fields["X-Request-Id"]) == 16
        assert "Connection" not in fields  # HTTP/1.1 keep-alive is the default
        assert orjson.loads(body)["user_id"] == user
    assert (await gateway.stats(campaign))["granted"] == 2


async def test_an_error_on_the_direct_claim_path_carries_the_envelope_and_its_request_id(
    gateway: Gateway,
) -> None:
    campaign = await gateway.put_campaign(stock=1)
    pipelined = claim_request(campaign, "ann") + claim_request(campaign, "bob")
    _, (status, headers, body) = await exchange(gateway, pipelined, 2)
    assert status == "HTTP/1.1 409 Conflict"
    error = orjson.loads(body)["error"]
    assert error["code"] == "sold_out"
    assert error["request_id"] == dict(headers)["X-Request-Id"]


async def test_connection_close_is_answered_once_and_the_connection_closed(
    gateway: Gateway,
) -> None:
    campaign = await gateway.put_campaign(stock=5)
    reader, writer = await connect(gateway)
    try:
        writer.write(claim_request(campaign, "ann", extra="Connection: close\r\n"))
        status, headers, _ = await read_answer(reader)
        rest = await asyncio.wait_for(reader.read(), 5)  # EOF: the gateway closed its side
    finally:
        writer.close()
    assert status == "HTTP/1.1 201 Created"
    assert [v for name, v in headers if name == "Connection"] == ["close"]
    assert rest == b""


async def test_an_http_1_0_claim_is_answered_by_aiohttp_in_http_1_0(gateway: Gateway) -> None:
    campaign = await gateway.put_campaign(stock=5)
    [(status, headers, body)] = await exchange(gateway, claim_request(campaign, "ann", "1.0"), 1)
    assert status == "HTTP/1.0 201 Created"
    assert dict(headers)["X-Request-Id"]
    assert orjson.loads(body)["campaign_id"] == campaign


async def test_a_claim_expecting_100_continue_gets_it_before_sending_its_body(
    gateway: Gateway,
) -> None:
    campaign = await gateway.put_campaign(stock=5)
    request = claim_request(campaign, "ann", extra="Expect: 100-continue\r\n")
    head, body = request.split(b"\r\n\r\n", 1)
    reader, writer = await connect(gateway)
    try:
        writer.write(head + b"\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(body)
        status, _, answer = await read_answer(reader)
    finally:
        writer.close()
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    assert status == "HTTP/1.1 201 Created"
    assert orjson.loads(answer)["user_id"] == "ann"
