"""Loads the Lua scripts once, joining library chunks before each script body.

Library chunks (`ratelimit/sliding_window.lua`, `ratelimit/field_window.lua`,
`risk/velocity.lua`) only define local functions; a script is their concatenation, the
constants its caller wrote from the configuration (if any), and its own body, so one EVALSHA
carries the whole decision.
redis-py's Script reloads on NOSCRIPT (after a Redis restart) and retries once.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript

LIBRARIES = (
    ("ratelimit", "sliding_window.lua"),
    ("ratelimit", "field_window.lua"),
    ("risk", "velocity.lua"),
)


def read_lua(package: str, name: str) -> str:
    """The text of a .lua file shipped next to a package's code."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def joined(name: str, constants: str = "") -> str:
    """The source of gateway/lua/<name> with every library chunk and `constants` before it."""
    parts = [read_lua(package, file) for package, file in LIBRARIES]
    parts.append(constants)
    parts.append(read_lua("gateway", f"lua/{name}"))
    return "\n".join(parts)


class Scripts:
    """Every script the gateway calls, registered once per Redis client."""

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
        self, redis: Any, fast: Any = None, constants: Mapping[str, str] | None = None
    ) -> None:
        """`constants`: Lua text put in front of a script's body, by script name."""
        self._redis = redis
        self._fast = fast  # an AutoPipeline on single-node Redis, else None (redis-py)
        constants = constants or {}
        self.by_name: dict[str, AsyncScript] = {
            name: redis.register_script(joined(f"{name}.lua", constants.get(name, "")))
            for name in self.NAMES
        }

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        """`scripts.claim(keys=[...], args=[...])` runs the claim script (NOSCRIPT reloads)."""
        try:
            script = self.__dict__["by_name"][name]
        except KeyError:
            raise AttributeError(name) from None
        if self._fast is not None:  # straight to the pipeline: one coroutine less per call
            return functools.partial(self._fast.evalsha, script.sha, script.script)
        return functools.partial(self._call, script)

    async def _call(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        if self._fast is not None:
            return await self._fast.evalsha(script.sha, script.script, keys, args)
        return await script(keys=keys, args=args)

    async def execute(self, *command: Any) -> Any:
        """A plain command, on the auto-pipeline when there is one."""
        if self._fast is not None:
            return await self._fast.execute(*command)
        return await self._redis.execute_command(*command)

    async def load_all(self) -> None:
        """Load every script (on all primaries of a cluster): the first call is an EVALSHA."""
        for script in self.by_name.values():
            script.sha = await self._redis.script_load(script.script)

    async def all_loaded(self) -> bool:
        """True when Redis answers and holds every script (the readiness check)."""
        shas = [s.sha for s in self.by_name.values() if s.sha]
        if len(shas) != len(self.by_name):
            return False
        found = await self._redis.script_exists(*shas)
        return all(found)
