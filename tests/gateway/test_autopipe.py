"""The auto-pipeline writes a full batch at once and answers every caller in order.

Against the session's real Valkey. The only stand-in is a spy on the connection's write, which
records what went out in each write and passes it on unchanged.
"""

from __future__ import annotations

import asyncio

from gateway.valkey.autopipe import FLUSH_AT, AutoPipeline


async def test_one_loop_turn_of_commands_goes_out_every_flush_at_commands_in_order(
    valkey_url: str,
) -> None:
    pipe = AutoPipeline(valkey_url, 2.0)
    try:
        await pipe.execute("PING")  # connected; the HELLO/SELECT writes are behind us
        transport = pipe._transport
        assert transport is not None
        writes: list[int] = []
        real_write = transport.write

        def spy(data: bytes) -> None:
            writes.append(data.count(b"ECHO"))
            real_write(data)

        transport.write = spy  # type: ignore[method-assign]
        n = 2 * FLUSH_AT + FLUSH_AT // 2
        # gather starts every call in the same loop turn
        replies = await asyncio.gather(*(pipe.execute("ECHO", f"m{i}") for i in range(n)))
    finally:
        await pipe.aclose()
    assert writes == [FLUSH_AT, FLUSH_AT, FLUSH_AT // 2]
    assert replies == [f"m{i}".encode() for i in range(n)]


async def test_a_batch_short_of_flush_at_goes_out_at_the_end_of_the_turn(valkey_url: str) -> None:
    pipe = AutoPipeline(valkey_url, 2.0)
    try:
        await pipe.execute("PING")
        replies = await asyncio.gather(*(pipe.execute("ECHO", str(i)) for i in range(3)))
    finally:
        await pipe.aclose()
    assert replies == [b"0", b"1", b"2"]
