"""The pipeline: source -> intake -> policy -> outbox -> workers -> outcomes.

``submit`` matches an event (intake), decides per target (policy: mute, fold, send) and
adds one pending delivery per target to the next transaction (outbox); ``on_done`` runs
once that transaction is committed, so a source acknowledges an event only when its
deliveries are safe in the store, and never waits for a delivery itself. Each endpoint's
worker sends from its pending rows; what an attempt comes to is written back (a retry
time, or an outcome with its counters).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from csnotify.aio import locked_thread
from csnotify.channels.base import Attempt, Message, attempt_once
from csnotify.channels.pool import ChannelPool
from csnotify.delivery.intake import Intake, Target, resource_key
from csnotify.delivery.outbox import LEASE_S, Changes, Outbox, PendingRow, Writer
from csnotify.delivery.outcomes import Outcomes
from csnotify.delivery.policy import FOLDED, SEND, Policy
from csnotify.delivery.settings import DeliverySettings, Stats
from csnotify.delivery.workers import EndpointWorker
from csnotify.models import Status
from csnotify.mutes import MuteSet
from csnotify.pacing import DIGEST_TYPE, Batch

if TYPE_CHECKING:
    from csnotify.events import Event
    from csnotify.models import Endpoint, Mute, Subscription
    from csnotify.store import DeliveryRecord, Store

log = logging.getLogger("csnotify")
KEEP_EVERY_S = LEASE_S / 3  # renew claims, look for rows other processes left
ONESHOT_WAIT_S = 10.0  # one-shot runs wait for retries due this soon; later ones stay stored


class Pipeline:
    def __init__(
        self,
        store: Store,
        settings: DeliverySettings,
        on_outcome: Callable[[DeliveryRecord], None] | None = None,
        restore: bool = False,
        channels: ChannelPool | None = None,
    ) -> None:
        """With ``restore`` (listen), batches an earlier run held back are sent.
        ``channels`` makes the channels (tests give one that records)."""
        self.store = store
        self.settings = settings
        self.restore = restore
        self.stats = Stats()
        self.db_lock = asyncio.Lock()
        self.channels = channels or ChannelPool(
            settings.concurrency, settings.command_env, settings.allow_networks, settings.environ
        )
        self.outbox = Outbox(store, settings.log_max, settings.disable_after)
        self.writer = Writer(self.outbox, self.db_lock, self._committed)
        self.intake = Intake()
        self.policy = Policy(self._batch_due, self._batch_changed)
        self.outcomes = Outcomes(settings, self.stats, self.writer, self.channels, on_outcome)
        self.workers: dict[int, EndpointWorker] = {}
        self._slots = asyncio.Semaphore(settings.concurrency)
        # batches taken over from listeners that are gone, by endpoint, until it is loaded
        self._stored_batches: dict[int, list[tuple[str, Batch]]] = {}
        self._backlogs: dict[int, int] = {}
        self._keeper: asyncio.Task[None] | None = None
        self._closed = False
        # ids of the rows this one-shot run accepted and that did not end yet (waiting()); a
        # listener (restore) never asks, and runs for months: it keeps no set per row
        self._mine: set[int] | None = None if restore else set()

    @property
    def targets(self) -> dict[int, Target]:
        return self.intake.targets

    @property
    def mutes(self) -> MuteSet:
        return self.policy.mutes

    # -- set-up --------------------------------------------------------------------------

    async def __aenter__(self) -> Pipeline:
        self.writer.start()
        released = await self.db(self.outbox.release_dead)
        if released:
            log.info("took over %d pending deliveries of a listener that stopped", released)
        self._backlogs = await self.db(self.outbox.backlogs)
        if self.restore:
            self._keep_taken(await self.db(self.outbox.take_orphan_batches))
        self._keeper = asyncio.create_task(self._keep())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def load(self, subscriptions: list[Subscription], mutes: list[Mute] | None = None) -> None:
        """Take a (new) set of subscriptions and mutes; endpoints that stay keep their
        worker, rate window and pending batch."""
        self.policy.mutes = MuteSet(mutes or [])
        was_off = {i for i, t in self.intake.targets.items() if not t.enabled}
        added, removed = self.intake.load(
            subscriptions, self.channels.get, self.settings.human_max_per_minute
        )
        for target in added:
            worker = EndpointWorker(target, self.settings.per_endpoint, self._claim, self._attempt)
            worker.backlog = self._backlogs.pop(target.id, 0)
            self.workers[target.id] = worker
            worker.start()
            taken = self._stored_batches.pop(target.id, None)
            if taken:  # held back by an earlier run: send it
                self._take_over(target, taken)
        for target in removed:
            if target.batch is not None:
                self.policy.release(target)
            worker = self.workers.pop(target.id)
            task = asyncio.ensure_future(worker.stop())
            task.add_done_callback(lambda _t: None)
        for endpoint_id, worker in self.workers.items():
            if endpoint_id in was_off and worker.target.enabled:
                worker.retry_now()  # enabled again: what waited goes out now
            worker.need_load = True  # rows other processes left, or written while off
            worker.poke()

    # -- intake --------------------------------------------------------------------------

    async def submit(
        self, event: Event, on_done: Callable[[], Any] | None = None, remember: bool = False
    ) -> int:
        """Accept the event for every interested endpoint; returns how many. ``on_done``
        runs once its deliveries (or mutes, or folds) are committed to the store; with
        ``remember``, its id is written in the same transaction (so a redelivery of it is
        known)."""
        self.stats.events += 1
        targets = self.intake.match(event)
        if targets:
            self.stats.matched += 1
        for target in targets:
            self._take(target, event)
        if remember:
            self.writer.changes.seen.append((event.id, event.digest))
        if on_done is not None:
            if targets or remember:
                self.writer.after(on_done)
            else:
                on_done()
        await self.writer.room()
        return len(targets)

    def acknowledge(self, event_id: str, ack: Callable[[], Any]) -> None:
        """Mark a remembered event as acknowledged, then (once that is committed) run
        ``ack``: so a message the store does not show acknowledged surely was not, and a
        redelivery can be told from a twin (sources/amqp.py)."""
        self.writer.changes.acked.append(event_id)
        self.writer.after(ack)

    def checkpoint(self, source: str, position: dict[str, Any]) -> None:
        """Write a source's position with the next commit: in the same transaction as the
        deliveries of the events accepted before it, so both are kept or neither is."""
        self.writer.changes.cursors[source] = position
        self.writer.kick()

    async def resend(
        self, subscription: Subscription, endpoint: Endpoint, event: Event, webhook_id: str
    ) -> None:
        """Accept one event for one endpoint again (redeliver), with its recorded
        webhook-id; mutes and rate limits apply as to any delivery."""
        target = self.intake.targets[endpoint.id or 0]
        self.stats.events += 1
        self._take(target, event, webhook_id)
        await self.writer.room()

    def _take(self, target: Target, event: Event, webhook_id: str | None = None) -> None:
        decision, why = self.policy.decide(target, event)
        if decision == SEND:
            self._enqueue(target, event, webhook_id)
        else:
            self.outcomes.note(target, event, decision, why)
        self.writer.kick()

    def _enqueue(self, target: Target, event: Event, webhook_id: str | None = None) -> None:
        worker = self.workers[target.id]
        if worker.backlog >= self.settings.max_backlog and self._overflow(worker, event):
            return
        now = time.time()
        row = PendingRow(target.id, event, resource_key(event), now, webhook_id)
        row.next_at = now + self.settings.schedule[0]  # the wait before the first attempt
        row.claimed = worker.has_room()
        row.strict = target.endpoint.strict_order
        worker.backlog += 1
        self.writer.changes.new.append(row)

    def _overflow(self, worker: EndpointWorker, event: Event) -> bool:
        """The backlog is full: give up its oldest delivery we hold, sent or not yet
        written (True: there is none, so the new event is given up instead)."""
        limit = self.settings.max_backlog
        why = f"given up: {worker.target.label} has {limit} pending deliveries"
        log.log(
            logging.DEBUG if worker.overflowing else logging.WARNING,
            "%s (delivery.max_backlog); the oldest are given up",
            why,
        )
        worker.overflowing = True
        victim = worker.oldest_droppable()
        if victim is not None:
            self._end(worker, victim)
        else:
            new = self.writer.changes.new
            index = next((i for i, r in enumerate(new) if r.endpoint_id == worker.target.id), None)
            if index is None:
                self.outcomes.note(worker.target, event, Status.DROPPED, why)
                return True
            victim = new.pop(index)
            worker.backlog -= 1
        self.outcomes.note(worker.target, victim.event, Status.DROPPED, why)
        return False

    def _committed(self, changes: Changes) -> None:
        """New rows go into their workers' windows (or wait in the store for them); ended
        rows are no longer unsaved; endpoints the store says are off stop."""
        for endpoint_id, reason, by_us in changes.switched:
            target = self.intake.targets.get(endpoint_id)
            if target is not None:
                self.outcomes.switched_off(target, reason, by_us)
        for endpoint_id in changes.ended_at:
            worker = self.workers.get(endpoint_id)
            if worker is not None:
                worker.saved()
        for row in changes.new:
            if self._mine is not None:
                self._mine.add(row.id)
            worker = self.workers.get(row.endpoint_id)
            if worker is None:
                continue
            if row.claimed:
                worker.accept(row)
            else:
                worker.need_load = True
                worker.poke()

    # -- batches -------------------------------------------------------------------------

    def _batch_due(self, target: Target) -> None:
        event = self.policy.due(target)
        if event is not None and target.id in self.workers:
            self._enqueue(target, event)
            self.writer.kick()

    def _batch_changed(self, target: Target) -> None:
        if target.id:
            self.writer.changes.batches[target.id] = target.batch

    # -- workers -------------------------------------------------------------------------

    async def _claim(self, endpoint_id: int, limit: int) -> tuple[list[PendingRow], int]:
        strict = self.intake.targets[endpoint_id].endpoint.strict_order
        return await self.db(self.outbox.claim, endpoint_id, limit, strict)

    async def _attempt(self, worker: EndpointWorker, row: PendingRow) -> None:
        """One attempt; then the row is delivered, scheduled again, or given up."""
        target, s = worker.target, self.settings
        message = Message(row.event, target.subscription, target.endpoint.uri, row.webhook_id)
        if time.time() - row.accepted > s.max_age:
            why = f"older than delivery.max_age; last error: {row.last_error or 'none'}"
            self._give_up(worker, row, message, Attempt.failed(why, retryable=False), None)
            return
        if target.window is not None:  # the limit holds for every listener together
            reopens = await self.db(
                self.outbox.take_slot, target.id, target.window.per_minute, time.time()
            )
            if reopens:
                self._over_limit(worker, row, reopens)
                return
        started = time.monotonic()
        async with self._slots:
            attempt = await attempt_once(target.channel, message, s.timeout, target.label)
        row.attempts += 1
        latency = round((time.monotonic() - started) * 1000, 2)
        if attempt.ok:
            self.outcomes.delivered(target)
            self.outcomes.record(
                target, message, Status.DELIVERED, row.attempts, None, attempt.status, latency
            )
            self._end(worker, row)
            return
        if attempt.retryable and not attempt.gone and row.attempts < len(s.schedule):
            delay = s.schedule[row.attempts] * (0.8 + 0.4 * random.random())  # noqa: S311
            if attempt.retry_after is not None:
                delay = max(delay, min(attempt.retry_after, s.schedule[-1]))
            if time.time() + delay - row.accepted <= s.max_age:
                row.next_at = time.time() + delay
                row.last_error = attempt.error
                self.writer.changes.retries.append(row)
                self.writer.kick()
                self.stats.retried += 1
                log.info(
                    "attempt %d of %s %s to %s failed (%s); next in %.1f s",
                    row.attempts,
                    row.event.type,
                    row.event.id,
                    target.label,
                    attempt.error,
                    delay,
                )
                return
        self._give_up(worker, row, message, attempt, latency)

    def _over_limit(self, worker: EndpointWorker, row: PendingRow, reopens: float) -> None:
        """Other listeners used the endpoint's rate limit: the event joins this listener's
        digest; a digest waits for the window to reopen."""
        target = worker.target
        if row.event.type == DIGEST_TYPE:
            row.next_at = reopens
            self.writer.changes.retries.append(row)
            self.writer.kick()
            return
        self._end(worker, row)
        why = self.policy.fold(target, row.event, reopens)
        self.outcomes.note(target, row.event, FOLDED, why)

    def _give_up(
        self,
        worker: EndpointWorker,
        row: PendingRow,
        message: Message,
        attempt: Attempt,
        latency: float | None,
    ) -> None:
        target = worker.target
        self._end(worker, row)
        if not row.attempts:  # never sent (waited too long): not the endpoint's failure
            self.outcomes.note(target, row.event, Status.DROPPED, attempt.error or "given up")
            return
        self.outcomes.record(
            target, message, Status.FAILED, row.attempts, attempt.error, attempt.status, latency
        )
        self.outcomes.failed(target, row.event, attempt.error, attempt.gone)

    def _end(self, worker: EndpointWorker, row: PendingRow) -> None:
        worker.end(row)
        if self._mine is not None:
            self._mine.discard(row.id)
        self.writer.changes.ended.append(row.id)
        self.writer.changes.ended_at.append(worker.target.id)
        self.writer.kick()

    # -- running -------------------------------------------------------------------------

    async def db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A store call off the event loop, one at a time with the pipeline's writes."""
        return await locked_thread(self.db_lock, fn, *args)

    async def _keep(self) -> None:
        """Renew our claims; take rows that stopped processes left; refresh backlogs."""
        while True:
            await asyncio.sleep(KEEP_EVERY_S)
            try:
                await self.db(self.outbox.renew)
                await self.db(self.outbox.release_dead)
                backlogs = await self.db(self.outbox.backlogs)
            except Exception:
                log.exception("could not renew pending deliveries")
                continue
            if self.restore:
                await self._adopt_batches()
            for endpoint_id, worker in self.workers.items():
                worker.backlog = backlogs.get(endpoint_id, 0)
                if worker.backlog < self.settings.max_backlog * 0.9:
                    worker.overflowing = False
                worker.need_load = True
                worker.poke()

    async def _adopt_batches(self) -> None:
        """Batches a listener that died meanwhile held (several listeners share the store):
        this one sends them."""
        try:
            taken = await self.db(self.outbox.take_orphan_batches)
        except Exception:
            log.exception("could not read pending batches")
            return
        self._keep_taken(taken)
        for endpoint_id in list(self._stored_batches):
            target = self.intake.targets.get(endpoint_id)
            if target is not None:
                log.info("taking over a pending batch for %s", target.label)
                self._take_over(target, self._stored_batches.pop(endpoint_id))

    def _keep_taken(self, taken: list[tuple[int, str, str, float, str]]) -> None:
        for endpoint_id, key, kind, due, doc in taken:
            self._stored_batches.setdefault(endpoint_id, []).append(
                (key, Batch.from_doc(kind, due, doc))
            )

    def _take_over(self, target: Target, taken: list[tuple[str, Batch]]) -> None:
        """Batches other listeners left join this one's for the endpoint (or become it);
        the commit that writes it deletes them."""
        batch = target.batch
        for key, other in taken:
            if batch is None:
                batch = other
            else:
                batch.merge(other)
            self.writer.changes.merged.append((target.id, key))
        if batch is not None:
            self.policy.hold(target, batch)

    def quiet(self, horizon: float) -> bool:
        """Nothing to send before ``horizon`` (unix time)."""
        return (
            not self.policy.held
            and self.writer.idle
            and all(w.quiet(horizon) for w in self.workers.values())
        )

    async def drain(self, abort: asyncio.Event | None = None) -> None:
        """Wait until every delivery is finished or waits for a retry due more than
        ONESHOT_WAIT_S after the drain began (it stays in the store), and every batch is
        sent; or until ``abort`` is set. The horizon does not move: an endpoint that keeps
        failing cannot keep a one-shot run going."""
        horizon = time.time() + ONESHOT_WAIT_S
        while abort is None or not abort.is_set():
            await self.writer.flush()
            if self.quiet(horizon):
                return
            await asyncio.sleep(0.02)

    def waiting(self) -> int:
        """Deliveries accepted by this run that wait in the store (for a retry, or for
        their endpoint to be enabled)."""
        mine = self._mine or set()
        return sum(1 for w in self.workers.values() for r in w.rows.values() if r.id in mine)

    async def flush(self) -> None:
        await self.writer.flush()

    async def close(self, drain: bool = True, abort: asyncio.Event | None = None) -> None:
        """Stop. With ``drain``, wait as ``drain`` does first (until ``abort`` is set).
        Then no new attempt starts; attempts in flight finish. Pending deliveries and
        batches stay in the store for the next run. Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        if drain:
            await self.drain(abort)
        self.policy.pause()
        await asyncio.gather(*(w.stop() for w in self.workers.values()))
        await self.outcomes.finish()
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        await self.writer.stop()
        try:
            await self.db(self.outbox.release)
        except Exception:
            log.exception("could not release pending deliveries (they are taken over later)")
        try:
            await self.db(self.outbox.trim)
        except Exception:
            log.exception("could not trim the delivery log and seen ids (a later trim does)")
        await self.channels.close()
