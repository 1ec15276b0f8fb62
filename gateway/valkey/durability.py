"""When a change counts as kept (SPEC 5a): the wait sent after each script call.

`everysec` sends nothing: the change is answered once it is in Valkey's memory. `fsync` sends
`WAITAOF 1 0 <timeout>` (the primary's AOF is fsynced past the change) and `replica` sends
`WAIT 1 <timeout>` (at least one replica has it). Both count the writes of the connection they
are sent on, so the wait follows the call on the same connection: the auto-pipeline appends one
wait to each write that holds a script call (every call in it shares the wait), redis-py sends
call and wait as one pipeline.

A wait that ends with fewer acknowledgements than required is NotKept: the change happened on
the primary but may not survive a crash, so the caller answers 503 `unavailable` with
`Outcome-Unknown: true`, and a retry with the same Idempotency-Key replays the stored outcome.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import TimeoutError as RedisTimeout


class NotKept(RedisTimeout):
    """The change was made but not acknowledged as kept within durability_timeout_ms."""


class Durability:
    """The wait of one mode: `command` (None for everysec) and the check of its reply."""

    def __init__(self, mode: str = "everysec", timeout_ms: int = 1000) -> None:
        self.mode = mode
        self.timeout_ms = timeout_ms
        self.command: tuple[Any, ...] | None = {
            "everysec": None,
            "fsync": ("WAITAOF", 1, 0, timeout_ms),
            "replica": ("WAIT", 1, timeout_ms),
        }[mode]
        # How much longer than redis.timeout_s a call may take: its wait blocks the connection.
        self.extra_s = timeout_ms / 1000 if self.command else 0.0

    @classmethod
    def of(cls, redis: Any) -> Durability:
        """The durability of a `[redis]` settings section."""
        return cls(redis.durability, redis.durability_timeout_ms)

    def check(self, reply: Any) -> None:
        """Raise NotKept unless the wait's reply counts the acknowledgement required.

        An error reply (WAITAOF on a Valkey without an AOF) is NotKept as well: the change was
        made, and the log names what refused the wait."""
        if isinstance(reply, Exception):
            raise NotKept(f"{self.mode}: the wait failed: {reply}") from reply
        # WAITAOF answers [local fsyncs, replica fsyncs]; WAIT the number of replicas.
        acks = reply[0] if self.mode == "fsync" else reply
        if acks < 1:
            raise NotKept(f"{self.mode}: not acknowledged within {self.timeout_ms} ms")
