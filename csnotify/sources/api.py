"""CloudStack's listEvents API, polled.

The cursor (the newest ``created`` second handled, and the ids already handled at that
second) lives in the store and moves only over events whose deliveries are finished, so
a restart neither loses nor repeats events. A poll asks for everything from the cursor's
second on (``startdate`` is inclusive and has no milliseconds), so an idle poll is one
request.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from csnotify.cloudstack import ApiUnavailable, CloudStackClient, api_date
from csnotify.errors import BadInput
from csnotify.events import Event, from_list_item, parse_time, utc_iso
from csnotify.sources import Outage

if TYPE_CHECKING:
    from csnotify.listen import Listener
    from csnotify.subscriptions import Subscription

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2026-11-25T10:00:00Z``, ``2026-11-25 10:00:00`` or relative: ``30m``, ``2h``, ``1d``."""
    match = _RELATIVE.match(text.strip())
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (now or datetime.now(UTC)) - delta
    return parse_time(text)


@dataclass
class Cursor:
    created: str  # UTC ISO 8601, whole seconds
    ids: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"created": self.created, "ids": self.ids}

    def is_new(self, event: Event) -> bool:
        return event.created > self.created or (
            event.created == self.created and event.id not in self.ids
        )

    def advanced(self, events: list[Event]) -> Cursor:
        """Past ``events`` (oldest first, all handled)."""
        cursor = Cursor(self.created, list(self.ids))
        for event in events:
            if event.created > cursor.created:
                cursor = Cursor(event.created, [])
            cursor.ids.append(event.id)
        return cursor


class ApiSource:
    name = "api"

    def __init__(
        self,
        client: CloudStackClient,
        interval: float,
        since: datetime | None = None,
        once: bool = False,
    ) -> None:
        self.client = client
        self.interval = interval
        self.since = since
        self.once = once
        self.key = f"api:{client.creds.url}"
        self.outage = Outage(f"CloudStack API at {client.creds.url}")
        self.polls = 0

    async def subscriptions_changed(self, subscriptions: list[Subscription]) -> None:
        return None

    async def _start(self, listener: Listener) -> Cursor:
        if self.since is not None:
            return Cursor(utc_iso(self.since))
        saved = await listener.db(listener.state.cursor, self.key)
        if saved:
            return Cursor(saved["created"], list(saved.get("ids", [])))
        return Cursor(utc_iso(datetime.now(UTC)))

    async def run(self, listener: Listener) -> None:
        cursor = await self._start(listener)
        while not listener.stop.is_set():
            try:
                rows = await self.client.list_events(startdate=api_date(parse_time(cursor.created)))
            except ApiUnavailable as exc:
                if self.once:
                    raise
                if await listener.sleep(self.outage.failed(exc.message)):
                    return
                continue
            self.outage.ok()
            self.polls += 1
            cursor = await self._handle(listener, cursor, rows)
            if self.once or await listener.sleep(self.interval):
                return

    async def _handle(
        self, listener: Listener, cursor: Cursor, rows: list[dict[str, Any]]
    ) -> Cursor:
        events = []
        for row in reversed(rows):  # the API gives newest first
            try:
                event = from_list_item(row)
            except BadInput as exc:
                listener.reject(f"listEvents item {str(row.get('id'))[:40]}", exc.message)
                continue
            if cursor.is_new(event):
                events.append(event)
        if not events:
            return cursor
        done = [False] * len(events)
        left = asyncio.Event()
        remaining = [len(events)]

        def finished(i: int) -> None:
            done[i] = True
            remaining[0] -= 1
            if remaining[0] == 0:
                left.set()

        for i, event in enumerate(events):
            if listener.stop.is_set():
                break
            await listener.handle(event, lambda i=i: finished(i))
        if not listener.options.dry_run:
            stop_wait = asyncio.create_task(listener.stop.wait())
            all_done = asyncio.create_task(left.wait())
            await asyncio.wait({stop_wait, all_done}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            all_done.cancel()
            if listener.stop.is_set():
                await listener.finish()  # in-flight deliveries end; their events count as done
        else:
            return cursor  # --dry-run moves nothing
        handled = []
        for event, ok in zip(events, done, strict=True):
            if not ok:
                break  # the cursor only moves over an unbroken run of finished events
            handled.append(event)
        new = cursor.advanced(handled)
        if handled:
            await listener.db(listener.state.save_cursor, self.key, new.as_json())
        return new
