"""Block and allow lists: validated entries, Redis persistence, and each worker's snapshot.

Admins change lists through `apply_update`, which edits one Redis set and bumps a version
counter in one transaction. Each worker keeps an immutable `RiskLists` snapshot in a
`RiskListCache` and calls `refresh_if_changed` every ~0.5 s: one GET while nothing changed, a
full reload in one transaction when the version moved, so admin changes apply within 1 s.
All keys share the hash tag `{risk}` so a transaction is single-slot in Redis Cluster.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Final

from redis.asyncio import Redis, RedisCluster

from risk.ipset import IpSet

log = logging.getLogger(__name__)

LIST_NAMES: Final = ("blocked_users", "blocked_devices", "blocked_ips", "allowed_users")
VERSION_KEY: Final = "gw:{risk}:lists:version"
MAX_ID_CHARS: Final = 128
MAX_ENTRIES_PER_UPDATE: Final = 10_000

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc, TAB and DEL included


class ListError(ValueError):
    """A list update is invalid; nothing was changed."""


def list_key(name: str) -> str:
    """Return the Redis set holding list `name`: `gw:{risk}:list:<name>`."""
    if name not in LIST_NAMES:
        raise ListError(f"unknown list '{name}' (known: {', '.join(LIST_NAMES)})")
    return f"gw:{{risk}}:list:{name}"


def validate_entries(list_name: str, entries: object) -> list[str]:
    """Return the entries in canonical form (IPs/CIDRs normalised), or raise ListError."""
    list_key(list_name)
    if not isinstance(entries, list | tuple) or not all(isinstance(e, str) for e in entries):
        raise ListError(f"{list_name}: entries must be a list of strings")
    if len(entries) > MAX_ENTRIES_PER_UPDATE:
        raise ListError(f"{list_name}: at most {MAX_ENTRIES_PER_UPDATE} entries per update")
    check = _canonical_ip if list_name == "blocked_ips" else _checked_id
    return [check(entry, f"{list_name}[{index}]") for index, entry in enumerate(entries)]


def _checked_id(entry: str, where: str) -> str:
    if not 1 <= len(entry) <= MAX_ID_CHARS or _CONTROL.search(entry):
        raise ListError(f"{where}: ids are 1-128 characters without control characters")
    return entry


def _canonical_ip(entry: str, where: str) -> str:
    try:
        if "/" in entry:
            return str(ipaddress.ip_network(entry, strict=True))
        return str(ipaddress.ip_address(entry))
    except ValueError as exc:
        raise ListError(f"{where}: {entry!r} is not an IP address or CIDR ({exc})") from None


class RiskLists:
    """A snapshot of all lists, built once per change and read per request.

    Its sets are frozen; only `replace_with` changes it, swapping every list in one step.
    """

    def __init__(
        self,
        blocked_users: Iterable[str] = (),
        blocked_devices: Iterable[str] = (),
        blocked_ips: Iterable[str] = (),
        allowed_users: Iterable[str] = (),
    ) -> None:
        self.blocked_users: frozenset[str] = frozenset(blocked_users)
        self.blocked_devices: frozenset[str] = frozenset(blocked_devices)
        self.blocked_ips = IpSet(blocked_ips)
        self.allowed_users: frozenset[str] = frozenset(allowed_users)

    def blocked_by(self, user_id: str | None, device_id: str | None, ip: str | None) -> str | None:
        """Return the name of the first block list matching the request, None if none does."""
        if user_id is not None and user_id in self.blocked_users:
            return "blocked_users"
        if device_id is not None and device_id in self.blocked_devices:
            return "blocked_devices"
        # len() first: parsing the address costs more than the whole check when nothing is listed.
        if ip is not None and len(self.blocked_ips) and ip in self.blocked_ips:
            return "blocked_ips"
        return None

    def is_allowed(self, user_id: str | None) -> bool:
        """Return whether the user is on the allow list."""
        return user_id is not None and user_id in self.allowed_users

    def replace_with(self, other: RiskLists) -> None:
        """Take every list of `other` at once (no await in between, so no reader sees a mix)."""
        self.blocked_users, self.blocked_devices = other.blocked_users, other.blocked_devices
        self.blocked_ips, self.allowed_users = other.blocked_ips, other.allowed_users


async def apply_update(
    redis: Redis | RedisCluster, list_name: str, add: Sequence[str], remove: Sequence[str]
) -> int:
    """Validate, then add and remove entries and bump the version in one MULTI/EXEC.

    Returns the new version. Invalid input raises ListError before anything is written.
    """
    to_add = validate_entries(list_name, add)
    to_remove = validate_entries(list_name, remove)
    if both := sorted(set(to_add) & set(to_remove)):
        raise ListError(f"{list_name}: entries both added and removed: {', '.join(both)}")
    async with redis.pipeline(transaction=True) as pipe:
        if to_add:
            pipe.sadd(list_key(list_name), *to_add)
        if to_remove:
            pipe.srem(list_key(list_name), *to_remove)
        pipe.incr(VERSION_KEY)
        replies = await pipe.execute()
    return int(replies[-1])


class RiskListCache:
    """A worker's current `RiskLists`, reloaded from Redis only when the version changes.

    `lists` stays the same object for the cache's life and is updated in place, so code that
    kept a reference to it sees every refresh.
    """

    def __init__(self) -> None:
        self.lists = RiskLists()
        self.version: int | None = None  # None: never loaded

    async def refresh_if_changed(self, redis: Redis | RedisCluster) -> bool:
        """Reload all lists if the stored version differs from ours; return whether it did."""
        if _as_int(await redis.get(VERSION_KEY)) == self.version:
            return False
        async with redis.pipeline(transaction=True) as pipe:
            pipe.get(VERSION_KEY)
            for name in LIST_NAMES:
                pipe.execute_command(
                    "SMEMBERS", list_key(name)
                )  # cluster pipelines choke on smembers
            version, *sets = await pipe.execute()
        # One transaction: the snapshot and its version always match.
        fresh = RiskLists(**{n: map(_text, s) for n, s in zip(LIST_NAMES, sets, strict=True)})
        self.lists.replace_with(fresh)
        self.version = _as_int(version)
        return True


def _as_int(raw: bytes | str | None) -> int:
    return int(raw) if raw is not None else 0


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
