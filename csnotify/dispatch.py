"""One-shot runs on the delivery pipeline: ``dispatch`` (events from a file or stdin),
``redeliver`` (what the log holds, again) and ``test`` (one attempt per endpoint, outside
the pipeline: nothing counted or logged).

``dispatch`` and ``redeliver`` accept their events like ``listen`` does, then wait until
each delivery is finished or waits for a retry more than ten seconds away; such a retry
stays in the store and the next ``listen`` (or one-shot run) makes it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from csnotify.channels.base import Message, attempt_once
from csnotify.channels.pool import ChannelPool
from csnotify.clock import log_time, now_iso
from csnotify.delivery.pipeline import Pipeline
from csnotify.delivery.settings import DeliverySettings, Stats
from csnotify.errors import BadInput
from csnotify.events import Event, Rejected
from csnotify.redact import mask_text, mask_uri
from csnotify.store import DeliveryLog, DeliveryRecord

if TYPE_CHECKING:
    from csnotify.models import Endpoint, Subscription
    from csnotify.store import Store


@dataclass
class DispatchResult:
    stats: Stats
    rejected: list[Rejected]
    waiting: int = 0  # deliveries left in the store for a later retry

    def as_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "read": s.events + len(self.rejected),
            "events": s.events,
            "matched": s.matched,
            "delivered": s.delivered,
            "failed": s.failed,
            "skipped": len(self.rejected),
            "dropped": s.dropped,
            "muted": s.muted,
            "folded": s.folded,
            "waiting": self.waiting,
            "switched_off": list(s.switched_off),
            "rejected": [str(r) for r in self.rejected],
        }


async def dispatch_stream(
    store: Store,
    settings: DeliverySettings,
    items: Iterable[Event | Rejected],
    on_rejected: Callable[[Rejected], None] | None = None,
    on_outcome: Callable[[DeliveryRecord], None] | None = None,
) -> DispatchResult:
    rejected: list[Rejected] = []
    async with Pipeline(store, settings, on_outcome) as pipeline:
        pipeline.load(store.subscriptions(), store.mutes())
        for item in items:
            if isinstance(item, Rejected):
                rejected.append(item)
                if on_rejected is not None:
                    on_rejected(item)
                continue
            await pipeline.submit(item)
        await pipeline.drain()
        waiting = pipeline.waiting()
    return DispatchResult(pipeline.stats, rejected, waiting)


@dataclass
class RedeliverResult:
    subscription: str
    since: str | None
    until: str | None
    failed_only: bool
    in_log: int  # deliveries of the window the log still holds (one per event and endpoint)
    not_in_log: int  # deliveries of the window trimmed from the log (counted by the minute)
    stats: Stats
    switched_off: list[str]  # endpoints left out because they are switched off

    def as_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "subscription": self.subscription,
            "since": self.since,
            "until": self.until,
            "failed_only": self.failed_only,
            "in_log": self.in_log,
            "not_in_log": self.not_in_log,
            "delivered": s.delivered,
            "failed": s.failed,
            "muted": s.muted,
            "folded": s.folded,
            "skipped_switched_off": list(self.switched_off),
        }


async def redeliver(
    store: Store,
    settings: DeliverySettings,
    name: str,
    endpoint: str | None,
    since: str | None,
    until: str | None,
    failed: bool,
    on_outcome: Callable[[DeliveryRecord], None] | None = None,
) -> RedeliverResult:
    """Send again, oldest first, the messages the delivery log holds for subscription
    ``name`` (only ``endpoint``, given as stored or as shown masked) between ``since`` and
    ``until`` (ISO times or 30m, 2h, 1d ago), each once per endpoint, with the webhook-id
    it had. Muted events and events folded into a digest are not sent one by one: the
    digest is a message. Refused (BadInput) when the subscription or the endpoint is
    switched off, or the window is upside down; nothing is sent then."""
    from csnotify.events import from_normalised, parse_since
    from csnotify.subscriptions import find

    subscription = find(store, name)
    if not subscription.enabled:
        name = subscription.name
        raise BadInput(f"subscription {name} is disabled; run 'csnotify enable {name}'")
    endpoints = subscription.endpoints
    if endpoint is not None:
        ep = subscription.endpoint(endpoint)
        if not ep.enabled:
            shown = mask_uri(ep.uri)
            raise BadInput(
                f"endpoint {shown} is switched off; run 'csnotify enable {subscription.name}"
                f" --endpoint {shown}' first"
            )
        endpoints = [ep]
    since = log_time(parse_since(since)) if since else None
    until = log_time(parse_since(until)) if until else None
    if since and until and since > until:
        raise BadInput("--since is after --until; swap them")
    deliveries = DeliveryLog(store)
    live = [ep for ep in endpoints if ep.enabled and ep.id is not None]
    off = [mask_uri(ep.uri) for ep in endpoints if not ep.enabled]
    ids = [ep.id for ep in live if ep.id is not None]
    rows = deliveries.window(ids, since, until, failed) if ids else []
    missing = deliveries.trimmed(ids, since, until, failed) if ids else 0
    by_id = {ep.id: ep for ep in live}
    async with Pipeline(store, settings, on_outcome) as pipeline:
        pipeline.load([subscription], store.mutes())
        for row in rows:
            event = from_normalised(json.loads(row["payload"]))
            await pipeline.resend(subscription, by_id[row["endpoint_id"]], event, row["webhook_id"])
        await pipeline.drain()
    return RedeliverResult(
        subscription.name, since, until, failed, len(rows), missing, pipeline.stats, off
    )


@dataclass
class TestResult:
    uri: str
    kind: str
    ok: bool
    latency_ms: float
    status: int | None
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.uri,
            "kind": self.kind,
            "ok": self.ok,
            "latency_ms": self.latency_ms,
            "status": self.status,
            "error": self.error,
        }


def synthetic_event(sub: Subscription) -> Event:
    pattern = sub.patterns[0].upper()
    kind = (
        "CSNOTIFY.TEST"
        if set(pattern) <= {"*", "?", "."}
        else (pattern.replace("*", "TEST").replace("?", "X"))
    )
    return Event(
        id=str(uuid.uuid4()),
        type=kind,
        level=sub.level,
        state="Completed",
        category="ActionEvent",
        created=now_iso(),
        account="admin",
        domain="ROOT",
        username="admin",
        resource_type="VirtualMachine",
        resource_id=str(uuid.uuid4()),
        resource_name="csnotify-test",
        description=f"csnotify test event for subscription {sub.name}",
        source="test",
    )


async def test_endpoints(sub: Subscription, settings: DeliverySettings) -> list[TestResult]:
    """One attempt per endpoint (enabled or not), now; nothing is counted or logged."""
    event = synthetic_event(sub)
    channels = ChannelPool(
        settings.concurrency, settings.command_env, settings.allow_networks, settings.environ
    )

    async def one(ep: Endpoint) -> TestResult:
        started = time.monotonic()
        message = Message(event, sub, ep.uri)
        attempt = await attempt_once(
            channels.get(ep.uri), message, settings.timeout, mask_uri(ep.uri)
        )
        latency = round((time.monotonic() - started) * 1000, 1)
        return TestResult(
            mask_uri(ep.uri),
            ep.kind,
            attempt.ok,
            latency,
            attempt.status,
            mask_text(attempt.error) if attempt.error else None,
        )

    try:
        return list(await asyncio.gather(*(one(ep) for ep in sub.endpoints)))
    finally:
        await channels.close()
