"""The gateway's Lua scripts, as the functions of one Valkey function library.

Library chunks (`ratelimit/sliding_window.lua`, `ratelimit/field_window.lua`,
`risk/velocity.lua`) only define local functions. The library is those chunks once, then each
script: the constants its caller wrote from the configuration (if any) and its body, as a
function registered under the script's name and the library's digest. A call is one FCALL.
A script that defines `local function call(keys, argv)` at its top level is a chunk instead:
it runs once, at load, and `call` is the function, so its helpers are built once, not per call.

Functions, not EVALSHA: a library's chunk runs once, at FUNCTION LOAD, so its closures and
constant tables are built once, not on every call (docs/design/claim-path.md).

A server that lost the library (a restart without persistence, a new cluster primary) answers
"Function not found": the library is loaded again (on every primary of a cluster) and the call
retried once, as NOSCRIPT reloads a script. The digest names the library and its functions,
so gateways of two versions or configurations can share a server during a rolling deploy.

In the `fsync` and `replica` durability modes (gateway/valkey/durability.py) every script call
is answered once its wait says the change is kept: callers see no difference but the time.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from gateway.valkey.calls import function_lost
from gateway.valkey.durability import Durability

# The package whose invariant each script guards, and so holds its .lua file.
SCRIPT_ROOMS = {
    "claim": "gateway.claims",
    "admin_campaign": "gateway.admin",
    "admin_stock": "gateway.admin",
    "admin_state": "gateway.admin",
    "voucher_state": "gateway.admin",
    "card_add": "gateway.admin",
    "redeem_guard": "gateway.redemptions",
    "redeem": "gateway.redemptions",
    "redeem_settle": "gateway.redemptions",
    "pending_lease": "gateway.redemptions",
}

LIBRARIES = (
    ("ratelimit", "sliding_window.lua"),
    ("ratelimit", "field_window.lua"),
    ("risk", "velocity.lua"),
)


# A script that is a chunk names its function `call`, defined at its top level.
CHUNK_ENTRY = re.compile(r"^local function call\(", re.MULTILINE)


def read_lua(package: str, name: str) -> str:
    """The text of a .lua file shipped next to a package's code."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def library(names: tuple[str, ...], constants: Mapping[str, str]) -> tuple[str, str]:
    """(library name, source): the chunks once, then each script body as a function.

    A body sees KEYS and ARGV as its parameters, as a script sees them as globals; its
    constants are locals of a block of its own, so two scripts' constants never meet (nor
    a chunk script's helpers).
    """
    parts = [read_lua(package, file) for package, file in LIBRARIES]
    for name in names:
        script = read_lua(SCRIPT_ROOMS[name], f"lua/{name}.lua")
        register = f"redis.register_function('{name}_DIGEST', "
        if CHUNK_ENTRY.search(script):
            parts += ["do", constants.get(name, ""), script, register + "call)", "end"]
        else:
            body = [register + "function(KEYS, ARGV)", script, "end)"]
            parts += ["do", constants.get(name, ""), *body, "end"]
    code = "\n".join(parts)
    # The digest covers the text with the placeholder, then names the library and functions.
    digest = hashlib.sha1(code.encode(), usedforsecurity=False).hexdigest()[:12]
    name = f"gw_{digest}"
    return name, f"#!lua name={name}\n" + code.replace("_DIGEST'", f"_{digest}'")


class Scripts:
    """Every script the gateway calls, as functions of one library per server."""

    NAMES = (
        "claim",
        "admin_campaign",
        "admin_stock",
        "admin_state",
        "redeem_guard",
        "redeem",
        "redeem_settle",
        "pending_lease",
        "voucher_state",
        "card_add",
    )

    def __init__(
        self,
        redis: Any,
        fast: Any = None,
        constants: Mapping[str, str] | None = None,
        durability: Durability | None = None,
    ) -> None:
        """`constants`: Lua text put in front of a script's body, by script name."""
        self._redis = redis
        self._fast = fast  # an AutoPipeline on single-node Redis, else None (redis-py)
        self._durability = durability or Durability()
        self._wait = self._durability.command  # None in everysec: calls go as they always did
        self.library, self.source = library(self.NAMES, constants or {})
        digest = self.library.removeprefix("gw_")
        self.functions = {name: f"{name}_{digest}" for name in self.NAMES}

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        """`scripts.claim(keys=[...], args=[...])` calls the claim function (reloading the
        library once when the server lost it)."""
        try:
            function = self.__dict__["functions"][name]
        except KeyError:
            raise AttributeError(name) from None
        if self._fast is not None:  # straight to the pipeline: one coroutine less per call
            fcall = self._fast.fcall if self._wait is None else self._fast.fcall_kept
            return functools.partial(fcall, function, self.source)
        return functools.partial(self._call if self._wait is None else self._kept, function)

    async def _call(
        self, function: str, keys: list[Any], args: list[Any], flush: bool = False
    ) -> Any:
        """redis-py writes every call at once: `flush` (the auto-pipeline's) changes nothing."""
        try:
            return await self._redis.fcall(function, len(keys), *keys, *args)
        except ResponseError as error:
            if not function_lost(error):
                raise
        await self.load_all()
        return await self._redis.fcall(function, len(keys), *keys, *args)

    async def _kept(
        self, function: str, keys: list[Any], args: list[Any], flush: bool = False
    ) -> Any:
        """The call and its durability wait, reloading the library once if the server lost it."""
        try:
            return await self._call_and_wait(function, keys, args)
        except ResponseError as error:
            if not function_lost(error):
                raise
        await self.load_all()
        return await self._call_and_wait(function, keys, args)

    async def _call_and_wait(self, function: str, keys: list[Any], args: list[Any]) -> Any:
        """FCALL then the wait in one pipeline, so on one connection (the wait counts that
        connection's writes); on a cluster, both go to the node that holds the keys."""
        assert self._wait is not None
        pipe = self._redis.pipeline(transaction=False)
        pipe.fcall(function, len(keys), *keys, *args)
        if isinstance(self._redis, RedisCluster) and keys:
            pipe.execute_command(*self._wait, target_nodes=self._redis.get_node_from_key(keys[0]))
        else:
            pipe.execute_command(*self._wait)
        reply, acks = await pipe.execute(raise_on_error=False)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(acks, Exception) and not isinstance(acks, ResponseError):
            raise acks
        self._durability.check(acks)
        return reply

    async def execute(self, *command: Any) -> Any:
        """A plain command, on the auto-pipeline when there is one."""
        if self._fast is not None:
            return await self._fast.execute(*command)
        return await self._redis.execute_command(*command)

    async def load_all(self) -> None:
        """Load the library (on every primary of a cluster); REPLACE makes it idempotent."""
        await self._redis.function_load(self.source, replace=True)

    async def all_loaded(self) -> bool:
        """True when Redis answers and holds the library (on every primary of a cluster)."""
        found = await self._redis.function_list(library=self.library)
        if isinstance(found, dict):  # a cluster client: one answer per primary
            return bool(found) and all(found.values())
        return bool(found)
