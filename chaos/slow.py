"""The slow-connection attacker, run as its own process so its event loop does not slow the
honest clients' measurements: `python -m chaos.slow PORT CONNECTIONS SECONDS`.

Half the connections trickle a claim's request head, half send the head and trickle the body,
one byte a second; a connection the gateway closes is opened again at once, so
CONNECTIONS stay open for SECONDS. Prints `opened N` once all are open and `held N` at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import time

full_at = [0]  # connections wanted open at once
BODY = b'{"user_id": "slow", "device_id": "slow"}'.ljust(100)


def head(port: int, n: int) -> bytes:
    return (
        f"POST /v1/campaigns/slow/claims HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer chaos-key\r\nIdempotency-Key: slow-{n}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode()


async def hold(port: int, n: int, until: float, held: list[int], full: asyncio.Event) -> None:
    while time.monotonic() < until:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            sent_at_once, trickled = (b"", head(port, n) + BODY) if n % 2 else (head(port, n), BODY)
            held[0] += 1
            if held[0] >= full_at[0]:
                full.set()
            try:
                writer.write(sent_at_once)
                for byte in trickled:
                    if time.monotonic() >= until:
                        break
                    await asyncio.sleep(1.0)
                    writer.write(bytes([byte]))
                    await writer.drain()
            except OSError:
                pass
            finally:
                held[0] -= 1
                writer.close()
        await asyncio.sleep(0.01)


async def main(port: int, connections: int, seconds: float) -> None:
    until = time.monotonic() + seconds
    held = [0]
    full_at[0] = connections
    full = asyncio.Event()
    tasks = []
    for n in range(connections):
        tasks.append(asyncio.create_task(hold(port, n, until, held, full)))
        if n % 100 == 99:
            await asyncio.sleep(0.05)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(full.wait(), max(0.0, until - time.monotonic()))
    print(f"opened {held[0]}", flush=True)
    await asyncio.sleep(max(0.0, until - time.monotonic() - 1.0))
    print(f"held {held[0]}", flush=True)
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
