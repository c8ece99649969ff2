"""Outcomes: what each delivery came to, written with the next transaction.

Counters and the bounded delivery log are updated from the records; after
``failures.disable_after`` consecutive failed deliveries, or at once on 410 Gone, the
endpoint is switched off (its pending deliveries wait in the store until it is enabled
again), the reason recorded and logged, and ``failures.notify`` told.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from csnotify.channels.base import Message, attempt_once
from csnotify.clock import log_now, now_iso
from csnotify.delivery.outbox import LISTENER
from csnotify.events import Event
from csnotify.models import Status, Subscription
from csnotify.redact import mask_text, mask_uri
from csnotify.store import DeliveryRecord

if TYPE_CHECKING:
    from csnotify.channels.pool import ChannelPool
    from csnotify.delivery.intake import Target
    from csnotify.delivery.outbox import Writer
    from csnotify.delivery.settings import DeliverySettings, Stats

log = logging.getLogger("csnotify")


class Outcomes:
    def __init__(
        self,
        settings: DeliverySettings,
        stats: Stats,
        writer: Writer,
        channels: ChannelPool,
        on_outcome: Callable[[DeliveryRecord], None] | None,
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.writer = writer
        self.channels = channels
        self.on_outcome = on_outcome
        self._background: set[asyncio.Task[Any]] = set()

    def record(
        self,
        target: Target,
        message: Message,
        status: Status,
        attempts: int,
        error: str | None = None,
        http_status: int | None = None,
        latency_ms: float | None = None,
    ) -> None:
        record = DeliveryRecord(
            endpoint_id=target.id,
            subscription=target.subscription.name,
            endpoint=target.masked,
            event_id=message.event.id,
            event_type=message.event.type,
            status=status,
            attempts=attempts,
            at=log_now(),
            http_status=http_status,
            latency_ms=latency_ms,
            error=mask_text(error) if error else error,
            webhook_id=message.webhook_id,
            payload=kept_payload(message.event),
            listener=LISTENER,
        )
        self.writer.changes.records.append(record)
        if self.on_outcome is not None:
            self.on_outcome(record)

    def note(self, target: Target, event: Event, status: Status, why: str) -> None:
        """An outcome that sent nothing (muted, folded, dropped)."""
        if status == Status.MUTED:
            self.stats.muted += 1
        elif status == Status.FOLDED:
            self.stats.folded += 1
        else:
            self.stats.dropped += 1
        self.record(
            target, Message(event, target.subscription, target.endpoint.uri), status, 0, why
        )

    def delivered(self, target: Target) -> None:
        self.stats.delivered += 1
        target.consecutive_failures = 0

    def failed(self, target: Target, event: Event, error: str | None, gone: bool) -> None:
        """A delivery given up after its attempts. On a 410 Gone, or once this listener
        counted ``failures.disable_after`` in a row, it sends to the endpoint no more and
        the next commit switches it off. Failures are also counted in the store, by every
        listener at once: the commit that brings them to the limit switches it off too.
        Whichever commit did it says so (``switched_off``)."""
        self.stats.failed += 1
        target.consecutive_failures += 1
        log.warning("delivery of %s %s to %s failed: %s", event.type, event.id, target.label, error)
        limit, count = self.settings.disable_after, target.consecutive_failures
        if not target.enabled:
            return
        if gone:
            reason = f"the receiver answered 410 Gone: {error}"
        elif limit and count >= limit:
            reason = f"{count} consecutive failed deliveries; last: {error}"
        else:
            return
        target.enabled = False
        self.writer.changes.disable.append((target.id, reason))
        self.writer.kick()

    def switched_off(self, target: Target, reason: str, by_us: bool) -> None:
        """The store says the endpoint is off: this listener sends to it no more; the one
        whose commit switched it off says so and tells failures.notify."""
        target.enabled = False
        if not by_us:
            log.info("endpoint %s is switched off (%s)", target.label, reason)
            return
        self.stats.switched_off.append(target.label)
        log.error("switched off endpoint %s: %s", target.label, reason)
        if self.settings.notify:
            task = asyncio.create_task(self._tell_admin(target, reason))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _tell_admin(self, target: Target, reason: str) -> None:
        uri = self.settings.notify
        event = Event(
            id=str(uuid.uuid4()),
            type="CSNOTIFY.ENDPOINT.DISABLED",
            level="ERROR",
            state="Disabled",
            category="csnotify",
            created=now_iso(),
            resource_type="Endpoint",
            resource_name=target.masked,
            description=(
                f"csnotify switched off endpoint {target.masked} of subscription"
                f" {target.subscription.name}: {reason}"
            ),
            source="csnotify",
        )
        admin = Subscription(
            name=target.subscription.name,
            patterns=["*"],
            endpoints=[],
            title="[csnotify] endpoint switched off: {resource_name} ({subscription})",
            body="{description}",
        )
        channel = self.channels.get(uri)
        attempt = await attempt_once(
            channel, Message(event, admin, uri), self.settings.timeout, mask_uri(uri)
        )
        if not attempt.ok:
            log.error("could not tell failures.notify %s: %s", mask_uri(uri), attempt.error)

    async def finish(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


PAYLOAD_KEPT = 64 * 1024  # bytes of an event the delivery log keeps (x rows x endpoints)
FIELD_KEPT = 2000  # characters of each field of an event too large to keep whole


def kept_payload(event: Event) -> str:
    """The event as the delivery log keeps it (for redeliver): whole up to PAYLOAD_KEPT;
    a larger one loses its ``raw`` document and the ends of its long fields, and says so
    in ``raw``, so that an outsider's huge event cannot fill the store 100 times over."""
    text = event.json_text()
    if len(text) <= PAYLOAD_KEPT:
        return text
    import json

    doc = {
        name: value[:FIELD_KEPT] if isinstance(value, str) else value
        for name, value in event.as_json().items()
        if name != "raw"
    }
    doc["raw"] = {"csnotify_truncated": len(text)}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
