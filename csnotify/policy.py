"""What a caller of the HTTP API may subscribe: the endpoint kinds (``api.allow_schemes``;
``cmd:`` never, it runs on the csnotify host), the addresses an endpoint may reach
(private, loopback, link-local and other special addresses are refused unless inside
``api.allow_networks``: SSRF protection), and how many subscriptions and endpoints one
owner may have. Subscriptions made at a shell are an operator's and are not bound by it.

The addresses are checked when a subscription is written, after resolving the host name,
and again at delivery time on the addresses the name resolves to then
(``refused_address``), so a name that later points inside is refused too.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from csnotify.errors import BadInput
from csnotify.models import COMMAND, endpoint_kind
from csnotify.redact import mask_uri

if TYPE_CHECKING:
    from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PolicyRefused(BadInput):
    """The input is well formed, but this caller may not have it (the API answers 403)."""


def parse_networks(text: str) -> tuple[Network, ...]:
    """``10.1.0.0/16, fd00::/8`` -> networks (a single address is a /32 or /128)."""
    networks = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise BadInput(
                f"{item!r} is not a network; give CIDRs separated by commas, e.g. 10.1.0.0/16"
            ) from None
    return tuple(networks)


def parse_schemes(text: str) -> tuple[str, ...]:
    """``https, mailto`` -> the schemes; ``cmd`` is refused: it never is a tenant's."""
    schemes = tuple(s.strip().lower() for s in text.split(",") if s.strip())
    for scheme in schemes:
        if not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
            raise BadInput(f"{scheme!r} is not an URI scheme; give e.g. https,mailto")
        if scheme == "cmd":
            raise BadInput("cmd: endpoints run programs on the csnotify host; never a tenant's")
    return schemes


NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


def special(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Private, loopback, link-local, multicast, reserved or unspecified: not the Internet.
    An IPv6 address that carries an IPv4 one (mapped ::ffff:, 6to4 2002::/16, NAT64
    64:ff9b::/96, Teredo) is judged by that one too: a NAT64 gateway or 6to4 relay would
    take it there (64:ff9b::a9fe:a9fe is the metadata service 169.254.169.254)."""
    if not address.is_global or address.is_multicast:
        return True
    if isinstance(address, ipaddress.IPv6Address):
        inner: list[ipaddress.IPv4Address] = []
        if address.ipv4_mapped is not None:
            inner.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            inner.append(address.sixtofour)
        if address.teredo is not None:
            inner.extend(address.teredo)
        if any(address in net for net in NAT64):
            inner.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        return any(special(v4) for v4 in inner)
    return False


def endpoint_host(uri: str) -> str | None:
    """The host an endpoint connects to: a webhook's, or an Apprise service's server
    (mailto://user:pass@smtp.example); None when the URI names none (e.g. a service
    reached at its vendor's fixed address through a token)."""
    try:
        host = urlsplit(uri).hostname
    except ValueError:
        return None
    return host or None


def addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def refused_address(
    found: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address], allowed: tuple[Network, ...]
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The first special address not inside an allowed network, or None."""
    for address in found:
        if special(address) and not any(address in net for net in allowed):
            return address
    return None


@dataclass
class Policy:
    """The limits on what an API caller subscribes (from the ``api.*`` settings)."""

    schemes: tuple[str, ...] = ("https", "mailto", "mailtos")
    networks: tuple[Network, ...] = ()
    max_subscriptions: int = 100
    max_endpoints: int = 10
    resolve: Any = field(default=addresses, repr=False)

    @classmethod
    def from_settings(cls, settings: Any) -> Policy:
        return cls(
            schemes=parse_schemes(settings["api.allow_schemes"]),
            networks=parse_networks(settings["api.allow_networks"]),
            max_subscriptions=settings["api.max_subscriptions"],
            max_endpoints=settings["api.max_endpoints"],
        )

    def scheme(self, uri: str) -> None:
        """Before the URI is looked at further (a cmd: program is not even probed)."""
        text = uri.strip()
        scheme = text.split(":", 1)[0].lower() if ":" in text else ""
        if endpoint_kind(text) == COMMAND:
            raise PolicyRefused(
                f"--to {mask_uri(text)!r}: cmd: endpoints run on the csnotify host and are"
                " not available through the API; use an https:// webhook"
            )
        if scheme not in self.schemes:
            raise PolicyRefused(
                f"--to {mask_uri(text)!r}: {scheme or 'this'}: endpoints are not allowed through"
                f" the API; use one of {', '.join(s + ':' for s in self.schemes)}"
            )

    def address(self, uri: str) -> None:
        """After the URI was validated: where it connects must be outside private nets."""
        host = endpoint_host(uri)
        if host is None:
            return
        try:
            found = self.resolve(host)
        except OSError as exc:
            raise PolicyRefused(
                f"--to {mask_uri(uri)!r}: cannot resolve {host!r} ({exc.strerror or exc});"
                " give a host name that resolves to a public address"
            ) from None
        refused = refused_address(found, self.networks)
        if refused is not None:
            what = f"{host} is" if host == str(refused) else f"{host} is {refused},"
            raise PolicyRefused(
                f"--to {mask_uri(uri)!r}: {what} a private, loopback or"
                " link-local address; the API takes public addresses only (an operator may"
                " allow networks with api.allow_networks)"
            )

    def count(self, endpoints: int, owned: int) -> None:
        """``endpoints`` of one subscription; ``owned``: the owner's subscriptions with it."""
        if endpoints > self.max_endpoints:
            raise PolicyRefused(
                f"{endpoints} endpoints; a subscription made through the API may have at most"
                f" {self.max_endpoints} (api.max_endpoints)"
            )
        if owned > self.max_subscriptions:
            raise PolicyRefused(
                f"this owner would have {owned} subscriptions; the most is"
                f" {self.max_subscriptions} (api.max_subscriptions): delete one first"
            )
