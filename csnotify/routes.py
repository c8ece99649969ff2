"""Where an event would go: for each subscription, whether it takes the event and why
(or why not), and for each endpoint of one that does, whether it is switched off or
muted. ``csnotify match`` shows it; ``listen --dry-run`` prints it for each event."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from csnotify.matching import Verdict, explain
from csnotify.models import Endpoint, Mute, Subscription
from csnotify.mutes import MuteSet


@dataclass
class EndpointRoute:
    endpoint: Endpoint
    mute: Mute | None  # the mute in force that covers this event here, if any

    @property
    def sent(self) -> bool:
        return self.endpoint.enabled and self.mute is None


@dataclass
class Route:
    subscription: Subscription
    verdict: Verdict
    endpoints: list[EndpointRoute]  # empty unless the subscription takes the event

    @property
    def taken(self) -> bool:
        return self.verdict.matched


def routes(subscriptions: Iterable[Subscription], mutes: MuteSet, event: Any) -> list[Route]:
    """One route a subscription, in the order given (the store gives name order)."""
    found = []
    for sub in subscriptions:
        verdict = explain(sub, event)
        endpoints = [
            EndpointRoute(ep, mutes.find(sub.name, ep.uri, event.type))
            for ep in (sub.endpoints if verdict.matched else [])
        ]
        found.append(Route(sub, verdict, endpoints))
    return found
