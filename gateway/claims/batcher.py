"""The claims a worker has in flight on one campaign, decided together by one FCALL.

`lua/claim.lua` decides a batch in turn, exactly as one call each would, sharing the reads
and writes of the campaign (docs/design/claim-script.md). A batch holds the claims submitted
in one loop turn with the same shape (campaign, client, velocity rules carried, nonce or not,
challenge pass or not: the layout of their keys and arguments) and is sent at the end of the
turn, or at once when it holds CLAIMS_PER_CALL claims, so Valkey starts on it while the worker
still parses the requests behind it. Nothing waits for a batch to fill.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any

from gateway.claims.layout import Reply

# Claims per FCALL at most: a bigger batch keeps Valkey on one call, and its claims waiting,
# for longer (docs/design/claim-script.md says why 16).
CLAIMS_PER_CALL = 16
RESULT_ENTRIES = len(Reply._fields)  # per claim in the function's flat answer


class _Batch:
    __slots__ = ("args", "keys", "replies")

    def __init__(self, keys: list[Any], args: list[Any]) -> None:
        self.keys = keys
        self.args = args
        self.replies: list[asyncio.Future[Reply]] = []


class ClaimBatcher:
    """Groups claims by shape and sends each group as one call of the claim function."""

    def __init__(
        self, call: Callable[..., Awaitable[list[Any]]], per_call: int = CLAIMS_PER_CALL
    ) -> None:
        """`call(keys=..., args=..., flush=True)` runs the claim function (Scripts.claim)."""
        self._call = call
        self._per_call = per_call
        self._open: dict[Hashable, _Batch] = {}
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()  # held: the loop keeps weak references

    def submit(
        self,
        shape: Hashable,
        head_keys: Sequence[Any],
        head_args: Sequence[Any],
        keys: Sequence[Any],
        args: Sequence[Any],
    ) -> asyncio.Future[Reply]:
        """One claim's part of its batch; the future gets the claim's own Reply.

        `head_keys` and `head_args` lead the call and are taken from the claim that opens the
        batch: claims of one shape share them (the campaign's keys, the clock reading).
        """
        loop = asyncio.get_running_loop()
        batch = self._open.get(shape)
        if batch is None:
            batch = self._open[shape] = _Batch(list(head_keys), list(head_args))
            if not self._scheduled:
                self._scheduled = True
                loop.call_soon(self._send_open)
        batch.keys += keys
        batch.args += args
        reply: asyncio.Future[Reply] = loop.create_future()
        batch.replies.append(reply)
        if len(batch.replies) >= self._per_call:
            del self._open[shape]
            self._send(batch)
        return reply

    def _send_open(self) -> None:
        self._scheduled = False
        batches = list(self._open.values())
        self._open.clear()
        for batch in batches:
            self._send(batch)

    def _send(self, batch: _Batch) -> None:
        task = asyncio.ensure_future(self._decide(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _decide(self, batch: _Batch) -> None:
        try:
            results = await self._call(keys=batch.keys, args=batch.args, flush=True)
        except asyncio.CancelledError:
            for reply in batch.replies:
                reply.cancel()
            raise
        except Exception as error:  # every claim of the batch gets what the call raised
            _fail(batch, error)
            return
        if len(results) != RESULT_ENTRIES * len(batch.replies):
            _fail(batch, RuntimeError(f"claim function answered {len(results)} entries"))
            return
        for at, reply in enumerate(batch.replies):
            if not reply.done():  # else its request went away meanwhile
                reply.set_result(
                    Reply._make(results[RESULT_ENTRIES * at : RESULT_ENTRIES * (at + 1)])
                )


def _fail(batch: _Batch, error: Exception) -> None:
    for reply in batch.replies:
        if not reply.done():
            reply.set_exception(error)
