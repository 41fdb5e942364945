"""Which hosts webhooks may reach (WEBHOOK_ALLOWED_HOSTS): the URL check and the send-time check.

An entry is a host name (matched exactly, case-insensitive, in its ASCII form: an
internationalised name is compared and sent IDNA-encoded, ``xn--…``), an IP address or a
network ("10.0.0.0/8"). A URL is accepted when its host is a listed name, or an IP literal
inside a listed address or network. At send time the URL is checked again against the setting
as it is then, its host name is resolved (within the attempt's time), every address it
resolves to is checked, and the request goes to the first one accepted. An address is judged
as the IPv4 address it embeds, if any (``::ffff:127.0.0.1``, 6to4, NAT64); it is never an
unspecified (``0.0.0.0/8``, ``::``) or multicast one, and it is a loopback, link-local
(``169.254.0.0/16``, cloud metadata; ``fe80::/10``) or reserved one only when that address is
inside a listed network. Private addresses stay allowed for listed names: receivers are
internal. Nothing else (redirects, a second DNS answer) can send a request elsewhere.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = ("http", "https")
# Resolutions at once per process; one the resolver never answers holds its thread until the
# resolver gives up, the attempt is refused at its deadline.
RESOLVING_THREADS = 8

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
# A label of a host name in its ASCII form (underscores occur in internal names).
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
# Whitespace and control characters, which no URL sent may carry (urlsplit drops some of
# them silently, http.client refuses others at send time).
_NOT_IN_URLS = re.compile(r"[\x00-\x20\x7f-\x9f\s]")
_resolving = threading.BoundedSemaphore(RESOLVING_THREADS)


class HostRefused(ValueError):
    """A URL or address webhooks may not reach; the message says why (never a secret)."""


@dataclass(frozen=True)
class AllowedHosts:
    """WEBHOOK_ALLOWED_HOSTS parsed: the host names (ASCII form) and the networks."""

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
                continue
            except ValueError:
                pass
            with contextlib.suppress(HostRefused):  # not a host name: no URL's can match it
                names.add(ascii_name(text))
        return cls(frozenset(names), tuple(networks))

    def _in_networks(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def refusal(self, address: IPAddress) -> str | None:
        """Why a request may not go to ``address`` (a resolved one or a URL's literal), or
        None: see the module."""
        judged = embedded_ipv4(address)
        if judged.is_unspecified or judged in _THIS_NETWORK:
            return "unspecified"
        if judged.is_multicast:
            return "multicast"
        if self._in_networks(judged):
            return None
        if judged.is_loopback:
            return "loopback"
        if judged.is_link_local:
            return "link-local"
        if judged.is_reserved:
            return "reserved"
        return None

    def check_url(self, url: str) -> Target:
        """The URL's parts if its host is allowed; HostRefused naming the host if not."""
        target = Target.of(url)
        literal = target.literal
        if literal is not None:
            if not (self._in_networks(literal) or self._in_networks(embedded_ipv4(literal))):
                raise HostRefused(f"the host {target.host} is not in WEBHOOK_ALLOWED_HOSTS")
            reason = self.refusal(literal)
            if reason is not None:
                raise HostRefused(f"the host {target.host} is {_refused(literal, reason)}")
        elif target.host not in self.names:
            raise HostRefused(f"the host {target.host} is not in WEBHOOK_ALLOWED_HOSTS")
        return target

    def resolve(self, url: str, *, timeout: float) -> tuple[Target, str]:
        """The URL's parts and the address to connect to, checked now: its name resolved
        within ``timeout`` seconds, the first address it resolves to that may be reached."""
        target = self.check_url(url)
        if target.literal is not None:
            return target, str(target.literal)
        refused = []
        for sockaddr in _addresses(target.host, target.port, timeout):
            address = ipaddress.ip_address(str(sockaddr).split("%", 1)[0])
            reason = self.refusal(address)
            if reason is None:
                return target, str(address)
            refused.append(f"{address}, {_refused(address, reason)}")
        raise HostRefused(
            f"the host {target.host} resolves to no address a webhook may reach "
            f"({'; '.join(refused) or 'none'})"
        )


def _refused(address: IPAddress, reason: str) -> str:
    """Why ``address`` is refused, as the attempt's error shows it."""
    judged = embedded_ipv4(address)
    article = "an" if reason[0] in "aeiou" else "a"
    what = f"{article} {reason} address" + ("" if judged == address else f" ({judged})")
    if reason in ("unspecified", "multicast"):
        return f"{what}, never reached"
    return f"{what} not in a network listed in WEBHOOK_ALLOWED_HOSTS"


def embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, 6to4, NAT64), else the address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _addresses(host: str, port: int, timeout: float) -> list[Any]:
    """The addresses ``host`` resolves to, within ``timeout`` seconds (HostRefused if not).

    getaddrinfo has no timeout of its own: it runs in a daemon thread of its own (a resolver
    that never answers must not hold the sender, nor the process at exit), at most
    RESOLVING_THREADS at once.
    """
    deadline = time.monotonic() + timeout
    late = HostRefused(f"the host {host} could not be resolved within {timeout:g} s")
    if not _resolving.acquire(timeout=max(timeout, 0)):
        raise late
    answer: list[Any] = []
    done = threading.Event()

    def look_up() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except Exception as exc:  # handed to the waiting thread
            answer.append(exc)
        finally:
            _resolving.release()
            done.set()

    threading.Thread(target=look_up, name="maia-resolve", daemon=True).start()
    if not done.wait(max(deadline - time.monotonic(), 0)):
        raise late
    (found,) = answer
    if isinstance(found, Exception):
        raise HostRefused(f"the host {host} could not be resolved: {found}") from None
    return [sockaddr[0] for _family, _type, _proto, _name, sockaddr in found]


@dataclass(frozen=True)
class Target:
    """A webhook URL's parts: where to connect and what to ask for."""

    scheme: str
    host: str  # an IP address without brackets, or a name in its ASCII form, lower case
    port: int
    path: str  # with its query
    host_header: str  # the Host header: the host (and the port, if the URL gives one)

    @property
    def literal(self) -> IPAddress | None:
        """The host as an IP address, when the URL gives one."""
        return _ip_literal(self.host)

    @classmethod
    def of(cls, url: str) -> Target:
        """The parts of an http(s) URL without user info; HostRefused for anything else."""
        if _NOT_IN_URLS.search(url):
            raise HostRefused("the URL may not contain spaces or control characters")
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
        literal = _ip_literal(parts.hostname)
        host = parts.hostname if literal is not None else ascii_name(parts.hostname)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        if not path.isascii():
            raise HostRefused("the URL's path and query must be ASCII (percent-encode the rest)")
        shown = f"[{host}]" if isinstance(literal, ipaddress.IPv6Address) else host
        return cls(
            scheme=scheme,
            host=host,
            port=port or (443 if scheme == "https" else 80),
            path=path,
            host_header=shown if port is None else f"{shown}:{port}",
        )


def _ip_literal(host: str) -> IPAddress | None:
    """``host`` as an IP address, when it is one (without a zone: a name for an interface is
    not an address anyone listed)."""
    if "%" in host:
        return None
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def ascii_name(host: str) -> str:
    """A host name as compared and sent: lower case, IDNA-encoded (``例え.jp`` →
    ``xn--r8jz45g.jp``), without brackets or a trailing dot; HostRefused if it is not one."""
    name = host.strip().strip("[]").rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise HostRefused(f"the host {host!r} is not a valid host name") from None
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise HostRefused(f"the host {host!r} is not a valid host name")
    return name
