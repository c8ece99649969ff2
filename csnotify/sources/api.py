"""CloudStack's listEvents API, polled.

The cursor (the newest ``created`` second handled, in UTC, and the ids already handled at
that second) lives in the store and is written in the same transaction as the deliveries of
the events before it (the outbox), so a restart neither loses nor repeats events. A poll
reads the window from the cursor's second (``startdate`` is inclusive and has no
milliseconds) to a moment just past, written in the server's zone, completely
(``cloudstack.EventReader``); the cursor never moves past a second that could not be read
completely. The same cursor document keeps what was learned of the server: its UTC offset
and the page size it accepts.

A listEvents row names the owner's account and the acting user but gives no UUID of
either; with ``names`` (csnotify/names.py) they are looked up by name, for a whole page
at once, and a page's events wait at most ``cloudstack.lookup_timeout`` for them.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from csnotify.clock import utc_iso
from csnotify.cloudstack import ApiUnavailable, CloudStackClient, EventReader, created_utc
from csnotify.errors import BadInput, OperationFailed
from csnotify.events import Event, from_list_item, parse_time
from csnotify.servertime import offset_text, parse_offset
from csnotify.sources import Outage, log

if TYPE_CHECKING:
    from csnotify.listen import Listener
    from csnotify.models import Subscription
    from csnotify.names import Names
    from csnotify.store import SourceState


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
        names: Names | None = None,
    ) -> None:
        self.client = client
        self.names = names  # its client is this source's to close
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
        if not listener.options.dry_run:
            other = await listener.db(_other_poller, listener.state)
            if other is not None:
                raise OperationFailed(
                    f"another 'listen --source api' (pid {other.get('pid')} on"
                    f" {other.get('host')}) polls this store's cursor; a second would deliver"
                    " every event twice: stop it first, or give this one its own --db"
                )
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
        try:
            await self._run(listener)
        finally:
            if self.names is not None:
                await self.names.close()  # answers kept in the store while it is open
            await listener.finish()  # --once: everything delivered; after a signal, in flight
            if self.names is not None:
                await self.names.client.close()

    async def _run(self, listener: Listener) -> None:
        cursor = await self._start(listener)
        if self.names is not None:
            await listener.keep_names(self.names)
        reported: dict[str, Any] = {}
        while not listener.stop.is_set():
            try:
                rows = await self._poll(cursor)
            except ApiUnavailable as exc:
                if self.once:
                    raise
                if await listener.sleep(self.outage.failed(exc.message)):
                    return
                continue
            self.outage.ok()
            self.polls += 1
            handed = await self._submit(listener, cursor, rows)
            if handed or self.learned() != reported:  # with what was learned of the server
                reported = self.learned()
                listener.checkpoint(self.key, {**cursor.as_json(), **reported})
            if self.once:
                return
            if await listener.sleep(self.interval):
                return

    async def _submit(self, listener: Listener, cursor: Cursor, rows: list[dict[str, Any]]) -> int:
        """Hand the new events over, oldest first; returns how many. Their look-ups
        start together, so that the page waits at most ``cloudstack.lookup_timeout``."""
        events = []
        for row in reversed(rows):  # the API gives newest first
            try:
                events.append(from_list_item(row))
            except BadInput as exc:
                listener.reject(f"listEvents item {str(row.get('id'))[:40]}", exc.message)
        deadline = 0.0
        if self.names is not None:
            deadline = asyncio.get_running_loop().time() + self.names.timeout
            for event in events:
                if cursor.is_new(event):
                    self.names.start(event)
        handed = 0
        for event in events:
            if not cursor.is_new(event) or listener.stop.is_set():
                continue
            if self.names is not None:
                await self.names.enrich(event, deadline)
            cursor.add(event)
            handed += 1
            await listener.handle(event)
        return handed


def _other_poller(state: SourceState) -> dict[str, Any] | None:
    """Another API listener running on this store (its process alive, or its heartbeat
    recent on another host), if any: one cursor, one poller."""
    from csnotify.delivery.outbox import OWNER
    from csnotify.status import running_listeners

    others = running_listeners(state)
    return next((o for o in others if o.get("source") == "api" and o.get("id") != OWNER), None)
