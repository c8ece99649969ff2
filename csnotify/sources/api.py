"""CloudStack's listEvents API, polled.

The cursor (the newest ``created`` second handled, and the ids already handled at that
second) lives in the store and moves only over events whose deliveries are finished, so
a restart neither loses nor repeats events. A poll asks for everything from the cursor's
second on (``startdate`` is inclusive and has no milliseconds), so an idle poll is one
request.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from csnotify.cloudstack import ApiUnavailable, CloudStackClient, api_date
from csnotify.errors import BadInput
from csnotify.events import Event, from_list_item, parse_time, utc_iso
from csnotify.sources import Outage

if TYPE_CHECKING:
    from csnotify.listen import Listener
    from csnotify.subscriptions import Subscription


@dataclass
class Cursor:
    created: str  # UTC ISO 8601, whole seconds
    ids: list[str] = field(default_factory=list)
    _known: set[str] = field(default_factory=set, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._known = set(self.ids)

    def as_json(self) -> dict[str, Any]:
        return {"created": self.created, "ids": self.ids}

    def is_new(self, event: Event) -> bool:
        return event.created > self.created or (
            event.created == self.created and event.id not in self._known
        )

    def add(self, event: Event) -> None:
        """Move past ``event`` (events come oldest first)."""
        if event.created > self.created:
            self.created, self.ids, self._known = event.created, [], set()
        self.ids.append(event.id)
        self._known.add(event.id)


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
        saved = await self._start(listener)
        poller = _Frontier(saved)
        try:
            while not listener.stop.is_set():
                try:
                    rows = await self.client.list_events(
                        startdate=api_date(parse_time(poller.fetched.created))
                    )
                except ApiUnavailable as exc:
                    if self.once:
                        raise
                    if await listener.sleep(self.outage.failed(exc.message)):
                        return
                    continue
                self.outage.ok()
                self.polls += 1
                await self._submit(listener, poller, rows)
                if self.once:
                    await listener.finish()  # --once: everything delivered before we stop
                    return
                await self._save(listener, poller)
                if await listener.sleep(self.interval):
                    return
        finally:
            if not listener.options.dry_run:
                await listener.finish()  # after a signal: in-flight deliveries end first
                await self._save(listener, poller)

    async def _submit(
        self, listener: Listener, poller: _Frontier, rows: list[dict[str, Any]]
    ) -> None:
        for row in reversed(rows):  # the API gives newest first
            try:
                event = from_list_item(row)
            except BadInput as exc:
                listener.reject(f"listEvents item {str(row.get('id'))[:40]}", exc.message)
                continue
            if not poller.fetched.is_new(event) or listener.stop.is_set():
                continue
            poller.fetched.add(event)
            if listener.options.dry_run:
                await listener.handle(event)
                continue
            entry = poller.add(event)
            await listener.handle(event, entry.finish)

    async def _save(self, listener: Listener, poller: _Frontier) -> None:
        """Persist the cursor over the unbroken run of finished events (dry runs move nothing)."""
        if listener.options.dry_run:
            return
        moved = poller.collect()
        for event in moved:
            poller.saved.add(event)
        if moved:
            await listener.db(listener.state.save_cursor, self.key, poller.saved.as_json())


@dataclass
class _Entry:
    event: Event
    done: bool = False

    def finish(self) -> None:
        self.done = True


@dataclass
class _Frontier:
    """Two cursors: ``fetched`` moves as events are handed to the dispatcher (so the next
    poll does not hand them over again), ``saved`` only over events whose deliveries are
    all finished, oldest first. A slow endpoint delays the saved cursor, never the polls."""

    saved: Cursor
    fetched: Cursor = field(init=False)
    pending: deque[_Entry] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.fetched = Cursor(self.saved.created, list(self.saved.ids))

    def add(self, event: Event) -> _Entry:
        entry = _Entry(event)
        self.pending.append(entry)
        return entry

    def collect(self) -> list[Event]:
        done = []
        while self.pending and self.pending[0].done:
            done.append(self.pending.popleft().event)
        return done
