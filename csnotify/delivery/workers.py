"""Workers: one per endpoint, sending from its pending deliveries.

A worker holds a window of its endpoint's oldest pending rows (claimed in the store) and
starts those that may go: at most ``per_endpoint`` at once, never two of one resource
(the first pending row of a resource blocks the later ones, also while it waits for a
retry), and with ``strict_order`` one at a time in acceptance order. Rows of a resource
another process holds an earlier row of stay in the store until that row ends (the claim
leaves them; see outbox.py), so the order holds across listeners too. A dead or slow
endpoint only fills its own window; rows beyond it wait in the store, not in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from csnotify.delivery.intake import Target
    from csnotify.delivery.outbox import PendingRow

log = logging.getLogger("csnotify")
WINDOW_ROWS = 512  # pending rows held in memory per endpoint
REFILL_AT = WINDOW_ROWS // 2
# A row whose attempt raised (a bug, a broken store) waits this long, doubling per fault
# in a row up to FAULT_WAIT_MAX_S, instead of being tried again at once for ever.
FAULT_WAIT_S = 1.0
FAULT_WAIT_MAX_S = 300.0
# Rows another process holds an earlier row of their resource for are claimed once it ends:
# looked for again after this long, doubling up to RECHECK_MAX_S while they stay held.
RECHECK_S = 0.25
RECHECK_MAX_S = 5.0


class EndpointWorker:
    def __init__(
        self,
        target: Target,
        per_endpoint: int,
        claim: Callable[[int, int], Awaitable[tuple[list[PendingRow], int]]],
        attempt: Callable[[EndpointWorker, PendingRow], Awaitable[None]],
    ) -> None:
        self.target = target
        self.per_endpoint = per_endpoint
        self._claim = claim
        self._attempt = attempt
        self.rows: dict[int, PendingRow] = {}  # by id: acceptance order
        self.need_load = True  # the store may hold rows of ours not in the window
        self.backlog = 0  # rows of this endpoint in the store, as far as we know
        self.running = 0
        # Ended rows whose outcome is not committed yet. A crash repeats them (and those
        # running), so new attempts wait while there are per_endpoint of them: at most
        # 2 x per_endpoint deliveries are repeated after a SIGKILL.
        self.unsaved = 0
        self.loading = False  # claiming rows from the store
        self.earliest: float | None = None  # the next retry among the waiting rows
        self.recheck_at: float | None = None  # look for rows held back by another process
        self.recheck_wait = RECHECK_S
        self.overflowing = False  # the backlog is full (logged once)
        self.faults = 0  # attempts in a row that raised
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.task: asyncio.Task[None] | None = None

    # -- what the pipeline calls ---------------------------------------------------------

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._run())

    def poke(self) -> None:
        self._wake.set()

    def has_room(self) -> bool:
        """A new row may go straight into the window (nothing older waits in the store)."""
        return not self.need_load and len(self.rows) < WINDOW_ROWS

    def accept(self, row: PendingRow) -> None:
        self.rows[row.id] = row
        self._wake.set()

    def end(self, row: PendingRow) -> None:
        """The row's delivery ended (delivered, given up, dropped); written with the next
        commit."""
        self.rows.pop(row.id, None)
        self.backlog = max(0, self.backlog - 1)
        self.unsaved += 1
        self._wake.set()

    def saved(self) -> None:
        """An ended row's outcome is committed."""
        self.unsaved -= 1
        if self.unsaved < self.per_endpoint:
            self._wake.set()

    def quiet(self, horizon: float) -> bool:
        """Nothing running, nothing to load, nothing due before ``horizon`` (unix time)."""
        if self.running or self.loading or (self.need_load and self.target.enabled):
            return False
        if not self.target.enabled:
            return True
        if self.recheck_at is not None and self.recheck_at <= horizon:
            return False
        heads: set[str] = set()  # only the first row of a resource can be due
        for row in self.rows.values():
            key = self._key(row)
            if key not in heads:
                heads.add(key)
                if row.next_at <= horizon:
                    return False
        return True

    def _key(self, row: PendingRow) -> str:
        return "" if self.target.endpoint.strict_order else row.resource

    def retry_now(self) -> None:
        """The endpoint was enabled again: its waiting rows are due now."""
        for row in self.rows.values():
            row.next_at = 0.0
        self._wake.set()

    def oldest_droppable(self) -> PendingRow | None:
        return next((r for r in self.rows.values() if not r.running), None)

    async def stop(self) -> None:
        """No new attempts; those in flight finish."""
        self._stopping = True
        self._wake.set()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            if self.target.enabled:
                if self.recheck_at is not None and self.recheck_at <= time.time():
                    self.recheck_at, self.need_load = None, True
                if self.need_load and len(self.rows) <= REFILL_AT:
                    await self._load()
                for row in self._ready(time.time()):
                    self._spawn(row)
            timeout = None
            if self.target.enabled:
                due = [t for t in (self.earliest, self.recheck_at) if t is not None]
                if due:
                    timeout = max(0.0, min(due) - time.time())
            if timeout is None:
                await self._wake.wait()
                continue
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: no task per wait
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _load(self) -> None:
        room = WINDOW_ROWS - len(self.rows)
        self.need_load = False  # rows written while we read set it again
        self.loading = True
        try:
            rows, held_back = await self._claim(self.target.id, room)
        except Exception:
            log.exception("could not read pending deliveries of %s", self.target.label)
            self.need_load = True
            return
        finally:
            self.loading = False
        if held_back:
            self.recheck_at = time.time() + self.recheck_wait
            self.recheck_wait = min(RECHECK_MAX_S, self.recheck_wait * 2)
        else:
            self.recheck_at, self.recheck_wait = None, RECHECK_S
        newest = max(self.rows, default=0)
        for row in rows:
            self.rows.setdefault(row.id, row)
        if rows and rows[0].id < newest:  # older rows than some we hold: acceptance order
            self.rows = dict(sorted(self.rows.items()))
        if len(rows) >= room:
            self.need_load = True

    def _ready(self, now: float) -> list[PendingRow]:
        """Rows that may start now, oldest first; notes when the next retry is due."""
        free = self.per_endpoint - self.running
        if self.unsaved >= self.per_endpoint:
            free = 0
        blocked: set[str] = set()
        ready: list[PendingRow] = []
        earliest: float | None = None
        for row in self.rows.values():
            if free <= 0:
                break
            key = self._key(row)
            if key in blocked:
                continue
            blocked.add(key)
            if row.running:
                continue
            if row.next_at > now:
                earliest = row.next_at if earliest is None else min(earliest, row.next_at)
                continue
            row.running = True
            ready.append(row)
            free -= 1
        self.earliest = earliest
        return ready

    def _spawn(self, row: PendingRow) -> None:
        self.running += 1
        task = asyncio.create_task(self._one(row))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _one(self, row: PendingRow) -> None:
        try:
            await self._attempt(self, row)
            self.faults = 0
        except Exception:  # a bug must not stop this endpoint, nor spin on the row
            self.faults += 1
            wait = min(FAULT_WAIT_MAX_S, FAULT_WAIT_S * 2 ** min(self.faults - 1, 16))
            row.next_at = time.time() + wait
            log.exception(
                "delivery to %s failed unexpectedly; it stays pending, next try in %.0f s",
                self.target.label,
                wait,
            )
        finally:
            row.running = False
            self.running -= 1
            self._wake.set()
