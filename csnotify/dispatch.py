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
- Before each send: an active mute covering it makes the delivery ``muted`` (recorded,
  not sent, not a failure). An endpoint over its rate limit folds the event into a digest
  sent when the window reopens; after a digest, events keep folding until a minute has
  passed since it. A subscription with ``group_wait`` collects events for its human
  endpoints that long and sends them as one message. Pending batches are written to the
  store, so a restart sends them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from csnotify.aio import locked_thread
from csnotify.channels import APPRISE, COMMAND, endpoint_kind
from csnotify.channels.base import Attempt, Channel, Message
from csnotify.events import Event, Rejected, now_iso
from csnotify.matching import Matcher
from csnotify.mutes import Mute, MuteSet
from csnotify.pacing import DIGEST, GROUP, WINDOW_S, Batch, Window
from csnotify.redact import mask_uri
from csnotify.store import DeliveryLog, DeliveryRecord, utcnow
from csnotify.subscriptions import Endpoint, Subscription

if TYPE_CHECKING:
    from csnotify.config import Settings
    from csnotify.store import Store

log = logging.getLogger("csnotify")
FLUSH_EVERY_S = 0.2
MAX_QUEUED = 20_000
DUE = "due"  # queue item: the endpoint's pending batch is due


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
    human_max_per_minute: int = 10

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
            human_max_per_minute=s["delivery.human_max_per_minute"],
        )


@dataclass
class Stats:
    events: int = 0
    matched: int = 0  # events that reached at least one endpoint
    delivered: int = 0
    failed: int = 0
    dropped: int = 0  # deliveries not made because the endpoint was switched off meanwhile
    muted: int = 0
    folded: int = 0  # events folded into a digest or group message
    switched_off: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "matched": self.matched,
            "delivered": self.delivered,
            "failed": self.failed,
            "dropped": self.dropped,
            "muted": self.muted,
            "folded": self.folded,
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


@dataclass(eq=False)  # compared and hashed by identity
class Target:
    """One endpoint of one subscription, as the dispatcher runs it."""

    subscription: Subscription
    endpoint: Endpoint
    channel: Channel
    consecutive_failures: int = 0
    enabled: bool = True
    queue: asyncio.Queue[tuple[Event, _Pending, str | None] | str | None] = field(
        default_factory=asyncio.Queue
    )
    worker: asyncio.Task[None] | None = None
    window: Window | None = None  # the rate limit, if any
    group_wait: float = 0.0
    batch: Batch | None = None  # events waiting to go out as one message
    timer: asyncio.TimerHandle | None = None
    last_digest: float = 0.0  # unix time

    @property
    def label(self) -> str:
        return f"{self.subscription.name} -> {mask_uri(self.endpoint.uri)}"


class Dispatcher:
    def __init__(
        self,
        store: Store,
        settings: DeliverySettings,
        on_outcome: Callable[[DeliveryRecord], None] | None = None,
        restore: bool = False,
    ) -> None:
        """With ``restore`` (listen), batches an earlier run held back are sent."""
        self.store = store
        self.restore = restore
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
        self.mutes = MuteSet([])
        self._held: set[Target] = set()  # targets with a pending batch
        self._dirty: dict[int, Batch | None] = {}  # batches to write (None: delete)
        self._stored: dict[int, tuple[str, float, str]] = {}

    # -- set-up --------------------------------------------------------------------------

    async def __aenter__(self) -> Dispatcher:
        if self.restore:
            self._stored = await asyncio.to_thread(self._deliveries.batches)
        self._flusher = asyncio.create_task(self._flush_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def load(self, subscriptions: list[Subscription], mutes: list[Mute] | None = None) -> None:
        """Take a (new) set of subscriptions and mutes; endpoints that stay keep their queue,
        their rate-limit window and their pending batch."""
        self.matcher = Matcher(subscriptions)
        self.mutes = MuteSet(mutes or [])
        seen = set()
        for sub in subscriptions:
            for ep in sub.endpoints:
                key = (sub.name, ep.uri)
                seen.add(key)
                target = self.targets.get(key)
                if target is None:
                    target = Target(sub, ep, self.channels.get(ep.uri))
                    self.targets[key] = target
                    stored = self._stored.pop(ep.id, None) if ep.id is not None else None
                    if stored is not None:  # held back by an earlier run: send it
                        self._hold(target, Batch.from_doc(*stored))
                target.subscription, target.endpoint = sub, ep
                target.enabled = ep.enabled
                target.consecutive_failures = ep.consecutive_failures
                target.group_wait = sub.group_wait if ep.kind == APPRISE else 0.0
                limit = ep.limit(self.settings.human_max_per_minute)
                if limit <= 0:
                    target.window = None
                elif target.window is None or target.window.per_minute != limit:
                    window = Window(limit)
                    if target.window is not None:
                        window.sent = target.window.sent
                    target.window = window
        for key in set(self.targets) - seen:
            target = self.targets.pop(key)
            target.enabled = False
            if target.batch is not None:
                self._release(target)
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
            await self._enqueue(target, (event, pending, None))
        return len(targets)

    async def resend(
        self, subscription: Subscription, endpoint: Endpoint, event: Event, webhook_id: str
    ) -> None:
        """Queue one event for one endpoint again (redeliver), with its recorded webhook-id;
        mutes and rate limits apply as to any delivery."""
        target = self.targets[(subscription.name, endpoint.uri)]
        self.stats.events += 1
        await self._enqueue(target, (event, _Pending(1, None), webhook_id))

    async def _enqueue(self, target: Target, item: tuple[Event, _Pending, str | None]) -> None:
        await self._room.acquire()
        self._running += 1
        self._idle.clear()
        self._start(target)
        target.queue.put_nowait(item)

    def _start(self, target: Target) -> None:
        if target.worker is None:
            target.worker = asyncio.create_task(self._work(target))

    def _check_idle(self) -> None:
        if self._running <= 0 and not self._held:
            self._idle.set()

    async def drain(self) -> None:
        """Wait until every queued delivery is finished and its outcome written."""
        await self._idle.wait()
        await self.flush()

    async def _work(self, target: Target) -> None:
        while True:
            item = await target.queue.get()
            if item is None:
                return
            if item == DUE:
                try:
                    await self._send_batch(target)
                except Exception:
                    log.exception("sending the batch to %s failed unexpectedly", target.label)
                continue
            event, pending, webhook_id = item  # type: ignore[misc]
            finished = True
            try:
                finished = await self._deliver(target, event, webhook_id)
            except Exception:  # a bug must not stop this endpoint's queue
                log.exception("delivery to %s failed unexpectedly", target.label)
            finally:
                if finished:  # abandoned at shutdown: not done, so the source redelivers it
                    pending.one_done()
                self._room.release()
                self._running -= 1
                self._check_idle()

    async def _deliver(self, target: Target, event: Event, webhook_id: str | None = None) -> bool:
        """Deliver (with retries) and record, or mute, or fold into a batch; False if
        abandoned because we are stopping."""
        if not target.enabled:
            self.stats.dropped += 1
            return True
        now = time.time()
        mute = self.mutes.find(target.subscription.name, target.endpoint.uri, event.type)
        if mute is not None:
            self.stats.muted += 1
            self._note(target, event, "muted", f"muted until {mute.until}: {mute.reason}")
            return True
        if target.batch is not None:
            self._fold(target, target.batch, event)
            return True
        window = target.window
        batch = None
        if target.group_wait > 0:
            batch = Batch(GROUP, now + target.group_wait)
        elif window is not None and (not window.allows(now) or now - target.last_digest < WINDOW_S):
            batch = Batch(DIGEST, self._digest_due(target, window, now))
        if batch is not None:
            if batch.kind == DIGEST:
                log.info(
                    "%s is at its limit of %d a minute; events go into a digest",
                    target.label,
                    window.per_minute if window else 0,
                )
            self._hold(target, batch)
            self._fold(target, batch, event)
            return True
        if window is not None:
            window.note(now)
        return await self._send(target, event, webhook_id)

    # -- batches: groups and digests --------------------------------------------------

    @staticmethod
    def _digest_due(target: Target, window: Window, now: float) -> float:
        return max(window.reopens(now), target.last_digest + WINDOW_S)

    def _fold(self, target: Target, batch: Batch, event: Event) -> None:
        batch.add(event)
        self.stats.folded += 1
        if target.endpoint.id is not None:
            self._dirty[target.endpoint.id] = batch
        when = time.strftime("%H:%M:%S", time.gmtime(batch.due))
        why = "over the rate limit" if batch.kind == DIGEST else "grouped"
        self._note(target, event, "folded", f"{why}: in the message due at {when}Z")

    def _note(self, target: Target, event: Event, status: str, error: str) -> None:
        """Record an outcome that sent nothing (muted, folded)."""
        message = Message(event, target.subscription, target.endpoint.uri)
        self._record(target, message, status, 0, error=error)

    def _record(
        self,
        target: Target,
        message: Message,
        status: str,
        attempts: int,
        error: str | None = None,
        http_status: int | None = None,
        latency_ms: float | None = None,
    ) -> None:
        record = DeliveryRecord(
            endpoint_id=target.endpoint.id or 0,
            subscription=target.subscription.name,
            endpoint=mask_uri(target.endpoint.uri),
            event_id=message.event.id,
            event_type=message.event.type,
            status=status,
            attempts=attempts,
            at=utcnow(),
            http_status=http_status,
            latency_ms=latency_ms,
            error=error,
            webhook_id=message.webhook_id,
            payload=message.event.json_text(),
        )
        self._buffer.append(record)
        if self.on_outcome is not None:
            self.on_outcome(record)

    def _hold(self, target: Target, batch: Batch) -> None:
        target.batch = batch
        self._held.add(target)
        self._idle.clear()
        if target.endpoint.id is not None:
            self._dirty[target.endpoint.id] = batch
        self._arm(target, batch)

    def _arm(self, target: Target, batch: Batch) -> None:
        if target.timer is not None:
            target.timer.cancel()
        delay = max(0.0, batch.due - time.time())
        loop = asyncio.get_running_loop()
        target.timer = loop.call_later(delay, target.queue.put_nowait, DUE)
        self._start(target)

    def _release(self, target: Target) -> None:
        """The batch is sent, or its endpoint is gone."""
        target.batch = None
        if target.timer is not None:
            target.timer.cancel()
            target.timer = None
        self._held.discard(target)
        if target.endpoint.id is not None:
            self._dirty[target.endpoint.id] = None
        self._check_idle()

    async def _send_batch(self, target: Target) -> None:
        batch = target.batch
        if batch is None or self._stopping.is_set():
            return
        now = time.time()
        if batch.due > now + 0.01:  # an early or stale timer
            self._arm(target, batch)
            return
        window = target.window
        if window is not None:
            if not window.allows(now) or (
                batch.kind == DIGEST and now - target.last_digest < WINDOW_S
            ):
                batch.kind = DIGEST
                batch.due = self._digest_due(target, window, now)
                if target.endpoint.id is not None:
                    self._dirty[target.endpoint.id] = batch
                self._arm(target, batch)
                return
            window.note(now)
            if batch.kind == DIGEST:
                target.last_digest = now
        event = batch.message_event(f"{target.subscription.name}|{target.endpoint.uri}")
        log.info("sending %s to %s", batch.summary(), target.label)
        self._running += 1  # the message itself is a delivery drain waits for
        try:
            if await self._send(target, event) or not self._stopping.is_set():
                self._release(target)
        finally:
            self._running -= 1
            self._check_idle()

    async def _send(self, target: Target, event: Event, webhook_id: str | None = None) -> bool:
        """Send now (with retries) and record; False if abandoned because we are stopping."""
        if not target.enabled:
            self.stats.dropped += 1
            return True
        message = Message(event, target.subscription, target.endpoint.uri, webhook_id)
        started = time.monotonic()
        result = await self._attempts(target, message)
        if result is None:
            return False
        attempt, tries = result
        status = "delivered" if attempt.ok else "failed"
        latency = round((time.monotonic() - started) * 1000, 2)
        self._record(target, message, status, tries, attempt.error, attempt.status, latency)
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
            await locked_thread(self.db_lock, self._deliveries.disable, target.endpoint.id, reason)
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
        if not self._buffer and not self._dirty:
            return
        records, self._buffer = self._buffer, []
        pending = [
            (endpoint_id, None if b is None else (b.kind, b.due, b.to_doc()))
            for endpoint_id, b in self._dirty.items()
        ]
        self._dirty = {}
        await locked_thread(
            self.db_lock, self._deliveries.record, records, self.settings.log_max, pending
        )

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
                if target.timer is not None:  # pending batches stay in the store
                    target.timer.cancel()
                while not target.queue.empty():
                    item = target.queue.get_nowait()
                    if item is not None and item != DUE:
                        self._room.release()
                        self._running -= 1
            self._held.clear()
            self._check_idle()
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
            "muted": s.muted,
            "folded": s.folded,
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
        dispatcher.load(store.subscriptions(), store.mutes())
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
    subscription: Subscription,
    endpoints: list[Endpoint],
    since: str | None,
    until: str | None,
    failed: bool,
    on_outcome: Callable[[DeliveryRecord], None] | None = None,
) -> RedeliverResult:
    """Send again, oldest first, the messages the delivery log holds for these endpoints in
    the window (each once per endpoint), with the webhook-id they had. Muted events and
    events folded into a digest are not sent one by one: the digest is a message."""
    from csnotify.events import from_normalised

    deliveries = DeliveryLog(store)
    live = [ep for ep in endpoints if ep.enabled and ep.id is not None]
    off = [mask_uri(ep.uri) for ep in endpoints if not ep.enabled]
    ids = [ep.id for ep in live if ep.id is not None]
    rows = deliveries.window(ids, since, until, failed) if ids else []
    missing = deliveries.trimmed(ids, since, until, failed) if ids else 0
    by_id = {ep.id: ep for ep in live}
    async with Dispatcher(store, settings, on_outcome) as dispatcher:
        dispatcher.load([subscription], store.mutes())
        for row in rows:
            event = from_normalised(json.loads(row["payload"]))
            await dispatcher.resend(
                subscription, by_id[row["endpoint_id"]], event, row["webhook_id"]
            )
        await dispatcher.drain()
    return RedeliverResult(
        subscription.name, since, until, failed, len(rows), missing, dispatcher.stats, off
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
