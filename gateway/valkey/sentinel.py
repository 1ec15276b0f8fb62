"""`redis+sentinel://[user:password@]host:port[,host:port]/service`: the primary Sentinel names.

The Sentinels are asked, in turn, which node is the primary of `service` each time a
connection is made, so a gateway follows a failover by reconnecting. The user and password,
when given, are the primary's (the Sentinels are asked without credentials).
"""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple
from urllib.parse import unquote

import hiredis
from hiredis import pack_command

SCHEME = "redis+sentinel://"


class SentinelUrl(NamedTuple):
    sentinels: list[tuple[str, int]]
    service: str
    username: str | None
    password: str | None


def parse(url: str) -> SentinelUrl:
    """The Sentinels' addresses, the service name and the primary's credentials."""
    rest = url.removeprefix(SCHEME)
    hosts, _, service = rest.partition("/")
    userinfo, _, hosts = hosts.rpartition("@")
    username = password = None
    if userinfo:
        user, _, secret = userinfo.partition(":")
        username, password = (unquote(user) or None), unquote(secret)
    sentinels = []
    for address in hosts.split(","):
        host, _, port = address.rpartition(":")
        sentinels.append((host.strip("[]"), int(port)))
    return SentinelUrl(sentinels, service, username, password)


async def primary_address(sentinels: list[tuple[str, int]], service: str, timeout_s: float) -> Any:
    """(host, port) of the primary the first Sentinel that answers names; OSError if none."""
    errors = []
    for host, port in sentinels:
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    ask: tuple[Any, ...] = ("SENTINEL", "get-master-addr-by-name", service)
                    writer.write(pack_command(ask))
                    parser = hiredis.Reader(encoding="utf-8")
                    while (reply := parser.gets()) is False:
                        data = await reader.read(4096)
                        if not data:
                            raise ConnectionError("sentinel closed the connection")
                        parser.feed(data)
                finally:
                    writer.close()
            if isinstance(reply, list) and len(reply) == 2:
                return reply[0], int(reply[1])
            errors.append(f"{host}:{port} does not know {service!r}")
        except (OSError, TimeoutError) as exc:
            errors.append(f"{host}:{port}: {exc!r}")
    raise OSError(f"no Sentinel named a primary for {service!r}: {'; '.join(errors)}")
