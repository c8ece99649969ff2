"""Policy: what happens to an event for one target before anything is written.

- An active mute covering it: ``muted`` (recorded, not sent, not a failure).
- A target with a pending batch: the event joins it (``folded``).
- A subscription with ``group_wait`` (human endpoints): the first event opens a group.
- An endpoint over its rate limit, or within a minute of its last digest: the event opens a
  digest, sent when the window reopens.
- Otherwise: sent (a pending delivery).

A batch that comes due becomes one message (``due``): re-armed if the limit still holds
it back, else handed to the pipeline as an event of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from csnotify.models import Status
from csnotify.mutes import MuteSet
from csnotify.pacing import DIGEST, GROUP, WINDOW_S, Batch

if TYPE_CHECKING:
    from csnotify.delivery.intake import Target
    from csnotify.events import Event

log = logging.getLogger("csnotify")
SEND, MUTED, FOLDED = "send", Status.MUTED, Status.FOLDED


class Policy:
    def __init__(
        self,
        on_due: Callable[[Target], None],
        on_batch_changed: Callable[[Target], None],
    ) -> None:
        self.mutes = MuteSet([])
        self.held: set[Target] = set()  # targets with a pending batch
        self._on_due = on_due
        self._changed = on_batch_changed

    def decide(self, target: Target, event: Event) -> tuple[str, str]:
        """(SEND, "") or (MUTED | FOLDED, why)."""
        mute = self.mutes.find(target.subscription.name, target.endpoint.uri, event.type)
        if mute is not None:
            return MUTED, f"muted until {mute.until}: {mute.reason}"
        now = time.time()
        batch = target.batch
        if batch is None:
            window = target.window
            if target.group_wait > 0:
                batch = Batch(GROUP, now + target.group_wait)
            elif window is not None and (
                not window.allows(now) or now - target.last_digest < WINDOW_S
            ):
                batch = Batch(DIGEST, _digest_due(target, now))
                log.info(
                    "%s is at its limit of %d a minute; events go into a digest",
                    target.label,
                    window.per_minute,
                )
            else:
                if window is not None:
                    window.note(now)
                return SEND, ""
            self.hold(target, batch)
        return FOLDED, self._join(target, batch, event)

    def fold(self, target: Target, event: Event, reopens: float) -> str:
        """An event the shared rate limit held back (other listeners sent meanwhile) joins
        the target's batch, or opens a digest due when the window reopens; why."""
        batch = target.batch
        if batch is None:
            batch = Batch(DIGEST, max(reopens, _digest_due(target, time.time())))
            self.hold(target, batch)
        return self._join(target, batch, event)

    def _join(self, target: Target, batch: Batch, event: Event) -> str:
        batch.add(event)
        self._changed(target)
        when = time.strftime("%H:%M:%S", time.gmtime(batch.due))
        why = "over the rate limit" if batch.kind == DIGEST else "grouped"
        return f"{why}: in the message due at {when}Z"

    def hold(self, target: Target, batch: Batch) -> None:
        target.batch = batch
        self.held.add(target)
        self._changed(target)
        self._arm(target, batch)

    def _arm(self, target: Target, batch: Batch) -> None:
        if target.timer is not None:
            target.timer.cancel()
        delay = max(0.0, batch.due - time.time())
        target.timer = asyncio.get_running_loop().call_later(delay, self._on_due, target)

    def due(self, target: Target) -> Event | None:
        """The batch's message, if it may go now (the batch is then released); None if it
        was re-armed for later."""
        batch = target.batch
        if batch is None:
            return None
        now = time.time()
        if batch.due > now + 0.01:  # an early or stale timer
            self._arm(target, batch)
            return None
        window = target.window
        if window is not None:
            if not window.allows(now) or (
                batch.kind == DIGEST and now - target.last_digest < WINDOW_S
            ):
                batch.kind = DIGEST
                batch.due = _digest_due(target, now)
                self._changed(target)
                self._arm(target, batch)
                return None
            window.note(now)
            if batch.kind == DIGEST:
                target.last_digest = now
        log.info("sending %s to %s", batch.summary(), target.label)
        event = batch.message_event(f"{target.subscription.name}|{target.endpoint.uri}")
        self.release(target)
        return event

    def release(self, target: Target) -> None:
        """The batch is sent, or its endpoint is gone."""
        target.batch = None
        if target.timer is not None:
            target.timer.cancel()
            target.timer = None
        self.held.discard(target)
        self._changed(target)

    def pause(self) -> None:
        """Stop the timers; the batches stay in the store for the next run."""
        for target in self.held:
            if target.timer is not None:
                target.timer.cancel()
                target.timer = None
        self.held.clear()


def _digest_due(target: Target, now: float) -> float:
    window = target.window
    reopens = window.reopens(now) if window is not None else now
    return max(reopens, target.last_digest + WINDOW_S)
