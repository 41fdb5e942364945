"""Which hosts webhooks may reach (WEBHOOK_ALLOWED_HOSTS): the URL check and the send-time check.

An entry is a host name (matched exactly, case-insensitive), an IP address or a network
("10.0.0.0/8"). A URL is accepted when its host is a listed name, or an IP literal inside a
listed address or network. At send time the URL is checked again against the setting as it is
then, its host name is resolved, and the request goes to the address that was checked: a
listed name may resolve to any address but an unspecified or multicast one; an IP literal must
still be inside a listed network. Nothing else (redirects, a second DNS answer) can send a
request elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = ("http", "https")


class HostRefused(ValueError):
    """A URL or address webhooks may not reach; the message says why (never a secret)."""


@dataclass(frozen=True)
class AllowedHosts:
    """WEBHOOK_ALLOWED_HOSTS parsed: the host names and the networks."""

    names: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowedHosts:
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            text = str(entry).strip()
            try:
                networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
            except ValueError:
                names.add(_plain_name(text))
        return cls(frozenset(names), tuple(networks))

    def _in_networks(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def check_url(self, url: str) -> Target:
        """The URL's parts if its host is allowed; HostRefused naming the host if not."""
        target = Target.of(url)
        literal = target.literal
        if literal is not None:
            if not self._in_networks(literal):
                raise HostRefused(f"the host {target.host} is not in WEBHOOK_ALLOWED_HOSTS")
        elif target.host not in self.names:
            raise HostRefused(f"the host {target.host} is not in WEBHOOK_ALLOWED_HOSTS")
        return target

    def resolve(self, url: str) -> tuple[Target, str]:
        """The URL's parts and the address to connect to, checked now (resolving its name)."""
        target = self.check_url(url)
        if target.literal is not None:
            return target, str(target.literal)
        try:
            found = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise HostRefused(f"the host {target.host} could not be resolved: {exc}") from None
        for _family, _type, _proto, _name, sockaddr in found:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if not (address.is_unspecified or address.is_multicast):
                return target, str(address)
        raise HostRefused(f"the host {target.host} resolves to no address a webhook may reach")


@dataclass(frozen=True)
class Target:
    """A webhook URL's parts: where to connect and what to ask for."""

    scheme: str
    host: str  # lower case, without brackets
    port: int
    path: str  # with its query
    host_header: str  # the Host header: the name (and port) as the URL gives it

    @property
    def literal(self) -> IPAddress | None:
        """The host as an IP address, when the URL gives one."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    @classmethod
    def of(cls, url: str) -> Target:
        """The parts of an http(s) URL without user info; HostRefused for anything else."""
        try:
            parts: SplitResult = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise HostRefused(f"not a valid URL: {exc}") from None
        if parts.scheme.lower() not in SCHEMES:
            raise HostRefused("only http and https URLs are allowed")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise HostRefused("the URL may not carry a user name or password")
        if not parts.hostname:
            raise HostRefused("the URL has no host")
        scheme = parts.scheme.lower()
        host = _plain_name(parts.hostname)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(
            scheme=scheme,
            host=host,
            port=port or (443 if scheme == "https" else 80),
            path=path,
            host_header=parts.netloc,
        )


def _plain_name(host: str) -> str:
    """A host name as compared: lower case, without brackets or a trailing dot."""
    return host.strip().strip("[]").rstrip(".").lower()
