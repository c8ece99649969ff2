"""CloudStack's listEvents API, polled.

The cursor (the newest ``created`` second handled, in UTC, and the ids already handled at
that second) lives in the store and moves only over events whose deliveries are finished,
so a restart neither loses nor repeats events. A poll reads the window from the cursor's
second (``startdate`` is inclusive and has no milliseconds) to a moment just past, written
in the server's zone, completely (``cloudstack.EventReader``); the cursor never moves past
a second that could not be read completely. The same cursor document keeps what was
learned of the server: its UTC offset and the page size it accepts.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from csnotify.cloudstack import ApiUnavailable, CloudStackClient, EventReader, created_utc
from csnotify.errors import BadInput
from csnotify.events import Event, from_list_item, parse_time, utc_iso
from csnotify.servertime import offset_text, parse_offset
from csnotify.sources import Outage, log

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
        self.reader = EventReader(client, client.creds.clock(), client.creds.page_size)

    async def subscriptions_changed(self, subscriptions: list[Subscription]) -> None:
        return None

    async def _start(self, listener: Listener) -> Cursor:
        saved = await listener.db(listener.state.cursor, self.key) or {}
        self._learned(saved)
        if self.since is not None:
            return Cursor(utc_iso(self.since))
        if saved.get("created"):
            return Cursor(saved["created"], list(saved.get("ids", [])))
        return Cursor(utc_iso(datetime.now(UTC)))

    def _learned(self, saved: dict[str, Any]) -> None:
        """Offset and page size remembered from earlier runs (a forced zone wins)."""
        if saved.get("server_offset") and self.reader.clock.zone is None:
            with contextlib.suppress(BadInput):  # a hand-edited value: learn it again
                self.reader.clock.offset = parse_offset(saved["server_offset"])
        size = saved.get("page_size")
        if isinstance(size, int) and 0 < size < self.reader.pagesize:
            self.reader.pagesize = size

    def learned(self) -> dict[str, Any]:
        clock = self.reader.clock
        offset = clock.offset if clock.zone is None else None
        return {
            "server_offset": offset_text(offset) if offset is not None else None,
            "server_zone": str(clock.zone) if clock.zone is not None else None,
            "page_size": self.reader.pagesize,
        }

    async def _poll(self, fetched: Cursor) -> list[dict[str, Any]]:
        """The rows after the cursor that may be handed on now, newest first: every row the
        server counts up to now, or up to a second it could not give completely."""
        start = parse_time(fetched.created)
        end = datetime.now(UTC).replace(microsecond=0)
        window = await self.reader.read(start, end, known={start: set(fetched.ids)})
        if window.short and window.incomplete is None:
            log.warning(
                "listEvents counted %d more events from %s than it returned after three"
                " readings; going on without them",
                window.short,
                fetched.created,
            )
        if window.incomplete is not None:
            log.info("events of %s not all read yet; the cursor waits there", window.incomplete)
        rows = window.newest_first()
        if window.incomplete is None:
            return rows
        return [r for r in rows if created_utc(r) <= window.incomplete]

    async def run(self, listener: Listener) -> None:
        saved = await self._start(listener)
        poller = _Frontier(saved)
        reported = self.learned()
        try:
            while not listener.stop.is_set():
                try:
                    rows = await self._poll(poller.fetched)
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
                await self._save(listener, poller, force=self.learned() != reported)
                reported = self.learned()
                if await listener.sleep(self.interval):
                    return
        finally:
            if not listener.options.dry_run:
                await listener.finish()  # after a signal: in-flight deliveries end first
                await self._save(listener, poller, force=True)

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

    async def _save(self, listener: Listener, poller: _Frontier, force: bool = False) -> None:
        """Persist the cursor over the unbroken run of finished events (dry runs move nothing),
        with what was learned of the server."""
        if listener.options.dry_run:
            return
        moved = poller.collect()
        for event in moved:
            poller.saved.add(event)
        if moved or force:
            doc = {**poller.saved.as_json(), **self.learned()}
            await listener.db(listener.state.save_cursor, self.key, doc)


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
