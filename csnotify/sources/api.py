"""CloudStack's listEvents API, polled.

The cursor (the newest ``created`` second handled, and the ids already handled at that
second) lives in the store and is written in the same transaction as the deliveries of
the events before it (the outbox), so a restart neither loses nor repeats events. A poll
asks for everything from the cursor's second on (``startdate`` is inclusive and has no
milliseconds), so an idle poll is one request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from csnotify.cloudstack import ApiUnavailable, CloudStackClient, api_date
from csnotify.errors import BadInput
from csnotify.events import Event, from_list_item, parse_time, utc_iso
from csnotify.sources import Outage

if TYPE_CHECKING:
    from csnotify.listen import Listener
    from csnotify.models import Subscription


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
        cursor = await self._start(listener)
        try:
            while not listener.stop.is_set():
                try:
                    rows = await self.client.list_events(
                        startdate=api_date(parse_time(cursor.created))
                    )
                except ApiUnavailable as exc:
                    if self.once:
                        raise
                    if await listener.sleep(self.outage.failed(exc.message)):
                        return
                    continue
                self.outage.ok()
                self.polls += 1
                if await self._submit(listener, cursor, rows):
                    listener.checkpoint(self.key, cursor.as_json())
                if self.once:
                    return
                if await listener.sleep(self.interval):
                    return
        finally:
            await listener.finish()  # --once: everything delivered; after a signal, in flight

    async def _submit(self, listener: Listener, cursor: Cursor, rows: list[dict[str, Any]]) -> int:
        """Hand the new events over, oldest first; returns how many."""
        handed = 0
        for row in reversed(rows):  # the API gives newest first
            try:
                event = from_list_item(row)
            except BadInput as exc:
                listener.reject(f"listEvents item {str(row.get('id'))[:40]}", exc.message)
                continue
            if not cursor.is_new(event) or listener.stop.is_set():
                continue
            cursor.add(event)
            handed += 1
            await listener.handle(event)
        return handed
