"""Which Triton replicas the configured addresses stand for.

``EDGE_TRITON_URL`` lists ``host:port`` targets. An IP address is one replica. A host name is
every address it resolves to, re-resolved periodically: a Kubernetes headless Service or a
compose service name answers with one address per replica, so replicas that come and go are
followed without a restart. A name's IPv4 addresses are used if it has any, else its IPv6 ones
(``localhost`` is then one replica, 127.0.0.1, not two).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``resolve(host, port)``: the IP addresses of a host name; OSError when it cannot be resolved."""


@dataclass(frozen=True)
class Target:
    """One configured ``host:port``."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Target:
        """``host:port`` or ``[v6]:port``; ValueError otherwise."""
        host, sep, port = text.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"Triton address {text!r} is not host:port")
        return cls(host.removeprefix("[").removesuffix("]"), int(port))

    @property
    def literal(self) -> bool:
        """An IP address, not a name to resolve."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def replica_address(ip: str, port: int) -> str:
    """The gRPC target of one replica (IPv6 in brackets)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


async def system_resolver(host: str, port: int) -> list[str]:
    """The system's resolver (getaddrinfo, in a thread): IPv4 addresses, else IPv6 ones."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    v4 = sorted({info[4][0] for info in infos if info[0] == socket.AF_INET})
    return v4 or sorted({info[4][0] for info in infos if info[0] == socket.AF_INET6})


class Discovery:
    """Resolves the targets into replica addresses; a name that fails to resolve keeps the
    addresses it had (a DNS hiccup must not empty the pool)."""

    def __init__(self, targets: list[Target], resolver: Resolver = system_resolver):
        if not targets:
            raise ValueError("no Triton address configured")
        self.targets, self.resolver = targets, resolver
        self._known: dict[Target, list[str]] = {}

    async def replicas(self) -> set[str]:
        found: set[str] = set()
        for target in self.targets:
            found.update(replica_address(ip, target.port) for ip in await self._addresses(target))
        return found

    async def _addresses(self, target: Target) -> list[str]:
        if target.literal:
            return [target.host]
        try:
            self._known[target] = await self.resolver(target.host, target.port)
        except OSError as exc:
            logger.warning("cannot resolve Triton host %s (%s); keeping its %d known replicas", target.host, exc,
                           len(self._known.get(target, [])))
        return self._known.get(target, [])
