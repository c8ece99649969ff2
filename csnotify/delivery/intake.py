"""Intake: which endpoints an event goes to.

Subscriptions are indexed by the matcher; each enabled endpoint of a matching, enabled
subscription is a target. Targets live as long as their endpoint: a reload keeps a
target's pacing state (rate window, pending batch) and its worker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from csnotify.matching import Matcher
from csnotify.models import APPRISE
from csnotify.pacing import Batch, Window
from csnotify.redact import mask_uri

if TYPE_CHECKING:
    import asyncio

    from csnotify.channels.base import Channel
    from csnotify.events import Event
    from csnotify.models import Endpoint, Subscription


RESOURCE_KEY_MAX = 190  # longer keys are kept as their hash (pending's index bounds them)


@dataclass(eq=False)  # compared and hashed by identity
class Target:
    """One endpoint of one subscription, as the pipeline runs it."""

    subscription: Subscription
    endpoint: Endpoint
    channel: Channel
    consecutive_failures: int = 0
    enabled: bool = True  # the endpoint and its subscription are on
    window: Window | None = None  # the rate limit, if any
    group_wait: float = 0.0
    batch: Batch | None = None  # events waiting to go out as one message
    timer: asyncio.TimerHandle | None = None
    last_digest: float = 0.0  # unix time
    masked: str = ""  # the URI as outputs show it, masked once (not per delivery)

    @property
    def id(self) -> int:
        return self.endpoint.id or 0

    @property
    def label(self) -> str:
        return f"{self.subscription.name} -> {self.masked}"

    def refresh(self, sub: Subscription, ep: Endpoint, human_max_per_minute: int) -> None:
        """Take the stored settings; the rate window keeps what it counted."""
        self.subscription, self.endpoint = sub, ep
        self.masked = mask_uri(ep.uri)
        self.enabled = ep.enabled and sub.enabled
        self.consecutive_failures = ep.consecutive_failures
        self.group_wait = sub.group_wait if ep.kind == APPRISE else 0.0
        limit = ep.limit(human_max_per_minute)
        if limit <= 0:
            self.window = None
        elif self.window is None or self.window.per_minute != limit:
            window = Window(limit)
            if self.window is not None:
                window.sent = self.window.sent
            self.window = window


def resource_key(event: Event) -> str:
    """What orders deliveries: events of one resource reach an endpoint in the order they
    were accepted. Events that name no resource (alerts, hand-made events) share one key,
    so they keep their order among themselves."""
    if event.resource_id:  # a UUID: the same resource whatever category names its type
        key = event.resource_id
        if len(key) > RESOURCE_KEY_MAX:  # a hand-made event's: indexed keys are bounded
            return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        return key
    return "-"


class Intake:
    def __init__(self) -> None:
        self.matcher: Matcher[Subscription] = Matcher([])
        self.targets: dict[int, Target] = {}  # by endpoint id

    def load(
        self,
        subscriptions: list[Subscription],
        make_channel: Callable[[str], Channel],
        human_max_per_minute: int,
    ) -> tuple[list[Target], list[Target]]:
        """Take a (new) set of subscriptions; returns the targets added and removed."""
        self.matcher = Matcher(subscriptions)
        added: list[Target] = []
        seen: set[int] = set()
        for sub in subscriptions:
            for ep in sub.endpoints:
                if ep.id is None:
                    continue
                seen.add(ep.id)
                target = self.targets.get(ep.id)
                if target is None:
                    target = Target(sub, ep, make_channel(ep.uri))
                    self.targets[ep.id] = target
                    added.append(target)
                target.refresh(sub, ep, human_max_per_minute)
        removed = [self.targets.pop(i) for i in set(self.targets) - seen]
        for target in removed:
            target.enabled = False
        return added, removed

    def match(self, event: Event) -> list[Target]:
        return [
            t
            for sub in self.matcher.match(event)
            for ep in sub.endpoints
            if ep.id is not None and (t := self.targets.get(ep.id)) is not None and t.enabled
        ]
