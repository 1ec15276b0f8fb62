"""Random bytes for codes and ids, from the OS CSPRNG, read in blocks.

A request needs eight random bytes for its request id (a redemption ten more for its id); one
`getrandom` call per need is a syscall per request for a few bytes. Reading 4 KiB at a time and
handing out slices gives the same bytes (the kernel's CSPRNG output, used once each) without it.
A forked child starts with an empty block, so parent and child never hand out the same bytes.
"""

from __future__ import annotations

import os

BLOCK = 4096


class RandomPool:
    """Slices of os.urandom output; every byte is handed out once."""

    def __init__(self, block: int = BLOCK) -> None:
        self._block = block
        self._data = b""
        self._at = 0
        os.register_at_fork(after_in_child=self.reset)

    def take(self, n: int) -> bytes:
        at = self._at
        if at + n > len(self._data):
            self._data = os.urandom(max(self._block, n))
            at = 0
        self._at = at + n
        return self._data[at : at + n]

    def reset(self) -> None:
        self._data = b""
        self._at = 0


pool = RandomPool()


def token_bytes(n: int) -> bytes:
    return pool.take(n)


def token_hex(n: int) -> str:
    return pool.take(n).hex()
