"""The endpoint policy at delivery time (csnotify/policy.py): before each attempt to an
endpoint of a subscription an account or domain made through the API, its host is
resolved and the attempt refused (not retried) when an address is private, loopback or
link-local and outside ``api.allow_networks``: a name that pointed outside when the
subscription was written may point inside now. Their Apprise endpoints do not follow
redirects. Operators' subscriptions pass untouched.

A webhook then connects to the address that was checked (pinned: a resolver that
answers differently a moment later, DNS rebinding, is not asked again); Apprise
resolves the name again when it connects, so for its endpoints an answer that changes
within that moment is not caught."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import replace

from csnotify.channels.base import Attempt, Channel, Message
from csnotify.models import APPRISE, endpoint_kind
from csnotify.policy import Network, endpoint_host, refused_address

OWNED = ("account", "domain")


async def check(uri: str, networks: tuple[Network, ...]) -> tuple[str | None, str | None]:
    """(why the endpoint is refused, None) or (None, the address to connect to: the first
    the host resolved to, all of them allowed; None when the URI names no host)."""
    host = endpoint_host(uri)
    if host is None:
        return None, None
    try:
        found = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, proto=socket.IPPROTO_TCP
            )
        except OSError as exc:
            return f"cannot resolve {host} ({exc.strerror or exc})", None
        found = [ipaddress.ip_address(str(i[4][0]).split("%", 1)[0]) for i in infos]
    address = refused_address(found, networks)
    if address is None:
        return None, str(found[0]) if found else None
    where = f"{host} is" if host == str(address) else f"{host} resolves to {address},"
    return (
        f"refused by the API's endpoint policy: {where} a private, loopback or link-local"
        " address (api.allow_networks)"
    ), None


def no_redirects(uri: str) -> str:
    """The Apprise URI with Apprise's own ``redirect=no`` last (the last value of a query
    option is the one Apprise keeps): a redirect would take the message to an address
    the check above never saw (Apprise posts with requests, which follows them)."""
    return uri + ("&" if "?" in uri else "?") + "redirect=no"


class Guarded:
    def __init__(self, channel: Channel, networks: tuple[Network, ...]) -> None:
        self.channel = channel
        self.networks = networks

    async def send(self, message: Message, timeout: float) -> Attempt:
        if message.subscription.owner_scope in OWNED:
            why, address = await check(message.uri, self.networks)
            if why is not None:
                return Attempt.failed(why, retryable=False)
            if endpoint_kind(message.uri) == APPRISE:
                message = replace(message, uri=no_redirects(message.uri))
            else:
                message = replace(message, address=address)
        return await self.channel.send(message, timeout)

    async def close(self) -> None:
        await self.channel.close()
