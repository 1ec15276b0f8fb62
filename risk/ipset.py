"""A set of IPv4/IPv6 addresses and CIDR networks with a lookup cost independent of its size."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class IpSet:
    """Membership of an address in any of many networks (a single address is a /32 or /128).

    Networks are grouped by (IP version, prefix length), each group a set of network numbers,
    so a lookup masks the address once per prefix length in use (at most 33 + 129), however
    many thousands of entries there are.
    """

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self._groups: dict[tuple[int, int], set[int]] = {}
        for entry in entries:
            self._add(entry)
        self.size = sum(len(group) for group in self._groups.values())

    def _add(self, entry: str) -> None:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            # Entries are validated on write; skip one written behind our back, don't crash.
            log.warning("ignoring invalid blocked_ips entry %r", entry)
            return
        shift = network.max_prefixlen - network.prefixlen
        group = self._groups.setdefault((network.version, network.prefixlen), set())
        group.add(int(network.network_address) >> shift)

    def __len__(self) -> int:
        return self.size

    def __contains__(self, ip: object) -> bool:
        """Return whether `ip` (a string) lies in any network; unparsable input is not in it."""
        address = _parse(ip)
        if address is None:
            return False
        number, bits = int(address), address.max_prefixlen
        for (version, prefixlen), group in self._groups.items():
            if version == address.version and number >> (bits - prefixlen) in group:
                return True
        return False


def _parse(ip: object) -> Address | None:
    if not isinstance(ip, str):
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:a.b.c.d is the IPv4 peer behind a dual-stack socket
    return address
