"""Fan-out: every event to every interested endpoint, fast and isolated.

- Each endpoint has its own queue and worker, so it receives events in order and a slow
  or dead endpoint holds up nobody but itself.
- All attempts share ``delivery.concurrency`` slots.
- A delivery is tried up to ``delivery.retries`` times with exponential backoff and
  jitter (``Retry-After`` honoured up to ``delivery.backoff_max``); 4xx other than
  408/429 are not retried; 410 Gone switches the endpoint off at once.
- Outcomes are written to the store in batches (counters and the bounded delivery log);
  after ``failures.disable_after`` consecutive failed deliveries the endpoint is switched
  off, the reason recorded and logged, and ``failures.notify`` told.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from csnotify.channels import APPRISE, COMMAND, endpoint_kind
from csnotify.channels.base import Attempt, Channel, Message
from csnotify.events import Event, Rejected, now_iso
from csnotify.matching import Matcher
from csnotify.redact import mask_uri
from csnotify.store import DeliveryLog, DeliveryRecord, utcnow
from csnotify.subscriptions import Endpoint, Subscription

if TYPE_CHECKING:
    from csnotify.config import Settings
    from csnotify.store import Store

log = logging.getLogger("csnotify")
FLUSH_EVERY_S = 0.2
MAX_QUEUED = 20_000


@dataclass(frozen=True)
class DeliverySettings:
    timeout: float = 10.0
    retries: int = 3
    concurrency: int = 64
    disable_after: int = 10
    notify: str = ""
    log_max: int = 100
    backoff: float = 1.0
    backoff_max: float = 60.0

    @classmethod
    def from_settings(cls, s: Settings) -> DeliverySettings:
        return cls(
            timeout=s["delivery.timeout"],
            retries=s["delivery.retries"],
            concurrency=s["delivery.concurrency"],
            disable_after=s["failures.disable_after"],
            notify=s["failures.notify"],
            log_max=s["log.max_per_endpoint"],
            backoff=s["delivery.backoff"],
            backoff_max=s["delivery.backoff_max"],
        )


@dataclass
class Stats:
    events: int = 0
    matched: int = 0  # events that reached at least one endpoint
    delivered: int = 0
    failed: int = 0
    dropped: int = 0  # deliveries not made because the endpoint was switched off meanwhile
    switched_off: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "matched": self.matched,
            "delivered": self.delivered,
            "failed": self.failed,
            "dropped": self.dropped,
            "switched_off": list(self.switched_off),
        }


class Channels:
    """One channel per endpoint kind, made on first use (so apprise is imported only when
    an Apprise endpoint is delivered to)."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._made: dict[str, Channel] = {}

    def get(self, uri: str) -> Channel:
        kind = endpoint_kind(uri)
        if kind not in self._made:
            self._made[kind] = self._make(kind)
        return self._made[kind]

    def _make(self, kind: str) -> Channel:
        if kind == COMMAND:
            from csnotify.channels.command import CommandChannel

            return CommandChannel()
        if kind == APPRISE:
            from csnotify.channels.apprise import AppriseChannel

            return AppriseChannel(workers=min(32, self.concurrency))
        import aiohttp

        from csnotify.channels.webhook import WebhookChannel

        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=0)
        return WebhookChannel(aiohttp.ClientSession(connector=connector))

    async def close(self) -> None:
        for channel in self._made.values():
            await channel.close()
        self._made.clear()


class _Pending:
    """Counts the deliveries of one event still running; calls back when none is left."""

    __slots__ = ("callback", "left")

    def __init__(self, left: int, callback: Callable[[], Any] | None) -> None:
        self.left = left
        self.callback = callback

    def one_done(self) -> None:
        self.left -= 1
        if self.left == 0 and self.callback is not None:
            self.callback()


@dataclass
class Target:
    """One endpoint of one subscription, as the dispatcher runs it."""

    subscription: Subscription
    endpoint: Endpoint
    channel: Channel
    consecutive_failures: int = 0
    enabled: bool = True
    queue: asyncio.Queue[tuple[Event, _Pending] | None] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None

    @property
    def label(self) -> str:
        return f"{self.subscription.name} -> {mask_uri(self.endpoint.uri)}"


class Dispatcher:
    def __init__(
        self,
        store: Store,
        settings: DeliverySettings,
        on_outcome: Callable[[DeliveryRecord], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.stats = Stats()
        self.on_outcome = on_outcome
        self.matcher: Matcher[Subscription] = Matcher([])
        self.targets: dict[tuple[str, str], Target] = {}
        self._deliveries = DeliveryLog(store)
        self.channels = Channels(settings.concurrency)
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._room = asyncio.Semaphore(MAX_QUEUED)
        self._buffer: list[DeliveryRecord] = []
        self.db_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = asyncio.Event()
        self._closed = False
        self._running = 0
        self._background: set[asyncio.Task[Any]] = set()

    # -- set-up --------------------------------------------------------------------------

    async def __aenter__(self) -> Dispatcher:
        self._flusher = asyncio.create_task(self._flush_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def load(self, subscriptions: list[Subscription]) -> None:
        """Take a (new) set of subscriptions; endpoints that stay keep their queue."""
        self.matcher = Matcher(subscriptions)
        seen = set()
        for sub in subscriptions:
            for ep in sub.endpoints:
                key = (sub.name, ep.uri)
                seen.add(key)
                target = self.targets.get(key)
                if target is None:
                    target = Target(sub, ep, self.channels.get(ep.uri))
                    self.targets[key] = target
                target.subscription, target.endpoint = sub, ep
                target.enabled = ep.enabled
                target.consecutive_failures = ep.consecutive_failures
        for key in set(self.targets) - seen:
            target = self.targets.pop(key)
            target.enabled = False
            target.queue.put_nowait(None)

    # -- the work ------------------------------------------------------------------------

    async def submit(self, event: Event, on_done: Callable[[], Any] | None = None) -> int:
        """Queue the event for every interested endpoint; returns how many. ``on_done``
        runs when all of them are finished (delivered or given up)."""
        self.stats.events += 1
        targets = [
            t
            for sub in self.matcher.match(event)
            for ep in sub.endpoints
            if (t := self.targets.get((sub.name, ep.uri))) is not None and t.enabled
        ]
        if not targets:
            if on_done is not None:
                on_done()
            return 0
        self.stats.matched += 1
        pending = _Pending(len(targets), on_done)
        for target in targets:
            await self._room.acquire()
            self._running += 1
            self._idle.clear()
            if target.worker is None:
                target.worker = asyncio.create_task(self._work(target))
            target.queue.put_nowait((event, pending))
        return len(targets)

    async def drain(self) -> None:
        """Wait until every queued delivery is finished and its outcome written."""
        await self._idle.wait()
        await self.flush()

    async def _work(self, target: Target) -> None:
        while True:
            item = await target.queue.get()
            if item is None:
                return
            event, pending = item
            finished = True
            try:
                finished = await self._deliver(target, event)
            except Exception:  # a bug must not stop this endpoint's queue
                log.exception("delivery to %s failed unexpectedly", target.label)
            finally:
                if finished:  # abandoned at shutdown: not done, so the source redelivers it
                    pending.one_done()
                self._room.release()
                self._running -= 1
                if self._running == 0:
                    self._idle.set()

    async def _deliver(self, target: Target, event: Event) -> bool:
        """Deliver (with retries) and record; False if abandoned because we are stopping."""
        if not target.enabled:
            self.stats.dropped += 1
            return True
        message = Message(event, target.subscription, target.endpoint.uri)
        started = time.monotonic()
        result = await self._attempts(target, message)
        if result is None:
            return False
        attempt, tries = result
        record = DeliveryRecord(
            endpoint_id=target.endpoint.id or 0,
            subscription=target.subscription.name,
            endpoint=mask_uri(target.endpoint.uri),
            event_id=event.id,
            event_type=event.type,
            status="delivered" if attempt.ok else "failed",
            attempts=tries,
            at=utcnow(),
            http_status=attempt.status,
            latency_ms=round((time.monotonic() - started) * 1000, 2),
            error=attempt.error,
            webhook_id=message.webhook_id,
            payload=event.json_text(),
        )
        self._buffer.append(record)
        if self.on_outcome is not None:
            self.on_outcome(record)
        if attempt.ok:
            self.stats.delivered += 1
            target.consecutive_failures = 0
            return True
        self.stats.failed += 1
        target.consecutive_failures += 1
        log.warning(
            "delivery of %s %s to %s failed: %s", event.type, event.id, target.label, attempt.error
        )
        limit = self.settings.disable_after
        if attempt.gone:
            await self.switch_off(target, f"the receiver answered 410 Gone: {attempt.error}")
        elif limit and target.consecutive_failures >= limit:
            count = target.consecutive_failures
            await self.switch_off(
                target, f"{count} consecutive failed deliveries; last: {attempt.error}"
            )
        return True

    async def _attempts(self, target: Target, message: Message) -> tuple[Attempt, int] | None:
        """The final attempt and how many were made; None if we stop before it is decided."""
        s = self.settings
        tries = 0
        while True:
            if self._stopping.is_set():
                return None
            tries += 1
            async with self._slots:
                attempt = await target.channel.send(message, s.timeout)
            if attempt.ok or not attempt.retryable or attempt.gone or tries >= s.retries:
                return attempt, tries
            if not target.enabled:
                return attempt, tries
            delay = s.backoff * 2 ** (tries - 1) * (0.5 + random.random())  # noqa: S311 - jitter
            if attempt.retry_after is not None:
                delay = max(delay, attempt.retry_after)
            try:  # a backoff ends early when we are told to stop
                await asyncio.wait_for(self._stopping.wait(), min(delay, s.backoff_max))
            except TimeoutError:
                continue
            return None

    async def switch_off(self, target: Target, reason: str) -> None:
        if not target.enabled:
            return
        target.enabled = False
        self.stats.switched_off.append(target.label)
        await self.flush()
        if target.endpoint.id is not None:
            async with self.db_lock:
                await asyncio.to_thread(self._deliveries.disable, target.endpoint.id, reason)
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
            resource_name=mask_uri(target.endpoint.uri),
            description=(
                f"csnotify switched off endpoint {mask_uri(target.endpoint.uri)} of subscription"
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
        attempt = await channel.send(Message(event, admin, uri), self.settings.timeout)
        if not attempt.ok:
            log.error("could not tell failures.notify %s: %s", mask_uri(uri), attempt.error)

    # -- the store -----------------------------------------------------------------------

    async def flush(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        async with self.db_lock:
            await asyncio.to_thread(self._deliveries.record, batch, self.settings.log_max)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            try:
                await self.flush()
            except Exception:
                log.exception("could not write delivery outcomes to the store")

    async def close(self, drain: bool = True) -> None:
        """Stop. With ``drain``, everything queued is delivered first. Without, queued
        deliveries are dropped and retries cut short (their events are not reported done,
        so a source that acknowledges on done redelivers them); attempts in flight finish.
        Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        if drain:
            await self.drain()
        else:
            self._stopping.set()
            for target in self.targets.values():
                while not target.queue.empty():
                    if target.queue.get_nowait() is not None:
                        self._room.release()
                        self._running -= 1
            if self._running <= 0:
                self._idle.set()
        for target in self.targets.values():
            if target.worker is not None:
                target.queue.put_nowait(None)
        workers = [t.worker for t in self.targets.values() if t.worker is not None]
        await asyncio.gather(*workers, return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._flusher is not None:
            self._flusher.cancel()
        await self.flush()
        await self.channels.close()


# -- one-shot runs: dispatch and test -----------------------------------------------------


@dataclass
class DispatchResult:
    stats: Stats
    rejected: list[Rejected]

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
    async with Dispatcher(store, settings, on_outcome) as dispatcher:
        dispatcher.load(store.subscriptions())
        for item in items:
            if isinstance(item, Rejected):
                rejected.append(item)
                if on_rejected is not None:
                    on_rejected(item)
                continue
            await dispatcher.submit(item)
        await dispatcher.drain()
    return DispatchResult(dispatcher.stats, rejected)


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
    channels = Channels(settings.concurrency)

    async def one(ep: Endpoint) -> TestResult:
        started = time.monotonic()
        attempt = await channels.get(ep.uri).send(Message(event, sub, ep.uri), settings.timeout)
        latency = round((time.monotonic() - started) * 1000, 1)
        return TestResult(
            mask_uri(ep.uri), ep.kind, attempt.ok, latency, attempt.status, attempt.error
        )

    try:
        return list(await asyncio.gather(*(one(ep) for ep in sub.endpoints)))
    finally:
        await channels.close()
