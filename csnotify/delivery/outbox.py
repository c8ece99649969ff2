"""The outbox: pending deliveries in the store.

An event is accepted once one row per endpoint it goes to is committed here; the source
is acknowledged only then. Workers send from these rows and delete them when the
delivery ends (delivered, or given up); a failed attempt writes the row's next attempt
time, so retries outlive the process.

Every write of the pipeline goes through ``Changes``: what accumulates while one
transaction runs is written by the next one, so the cost of a commit is shared by all
the events and outcomes that arrived meanwhile.

A process claims the rows it works on (``owner``, ``lease``). Rows are claimed when a
worker loads them and renewed while it holds them; a process that stops releases its
claims, and the claims of a process that died on this host are released when another one
starts, so nothing waits for a lease to run out after a crash on one machine. On a
database server several processes claim at once: each takes rows with ``SELECT ... FOR
UPDATE SKIP LOCKED``, so a row is claimed by one of them. Order per resource holds
across processes: a row waits in the store while another process holds a row of its
resource that was accepted (committed) before it (``claim``, ``_others_first``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from csnotify.aio import locked_thread
from csnotify.events import Event, from_normalised
from csnotify.pacing import WINDOW_S
from csnotify.processes import PIDNS, alive
from csnotify.store import (
    DeliveryLog,
    DeliveryRecord,
    EndpointCounters,
    PendingBatches,
    SourceState,
    in_chunks,
)

if TYPE_CHECKING:
    from csnotify.pacing import Batch
    from csnotify.store import Store

log = logging.getLogger("csnotify")
LEASE_S = 30.0  # a claim not renewed for this long may be taken by another process
STALE_AFTER_S = 15.0  # a listener elsewhere that saved no heartbeat for this long is gone
HOST = socket.gethostname()
LISTENER = f"{HOST}:{os.getpid()}"  # recorded with each delivery
# host:pid:pidns.nonce; the pid namespace tells containers that share a host name apart
OWNER = f"{LISTENER}:{PIDNS}.{uuid.uuid4().hex[:8]}"


@dataclass(eq=False)
class PendingRow:
    """One pending delivery: an event for one endpoint."""

    endpoint_id: int
    event: Event
    resource: str  # ordering key: deliveries of one resource go out in id order
    accepted: float
    webhook_id: str | None = None  # redeliver: the id recorded in the log
    attempts: int = 0
    next_at: float = 0.0
    last_error: str | None = None
    id: int = 0
    running: bool = False
    claimed: bool = True  # written as ours (the worker holds it) or left for loading
    strict: bool = False  # the endpoint sends one at a time in acceptance order


@dataclass
class Changes:
    """Writes waiting for the next transaction."""

    new: list[PendingRow] = field(default_factory=list)
    retries: list[PendingRow] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)  # pending ids to delete
    ended_at: list[int] = field(default_factory=list)  # their endpoint ids (for the workers)
    records: list[DeliveryRecord] = field(default_factory=list)
    batches: dict[int, Batch | None] = field(default_factory=dict)  # None: sent or gone
    merged: list[tuple[int, str]] = field(default_factory=list)  # batches taken into ours
    disable: list[tuple[int, str]] = field(default_factory=list)  # endpoints gone (410)
    # (event id, content id) of bus messages handled, to tell their redeliveries
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)  # of those, ids about to be acknowledged
    cursors: dict[str, dict[str, Any]] = field(default_factory=dict)  # source positions
    # Written by the commit: endpoints found off (endpoint id, reason, True if this commit
    # switched it off; False: another listener did).
    switched: list[tuple[int, str, bool]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in CHANGE_FIELDS)


CHANGE_FIELDS = (
    "new", "retries", "ended", "ended_at", "records", "batches", "merged", "disable", "seen",
    "acked", "cursors",
)  # fmt: skip


PENDING_COLUMNS = (
    "endpoint_id", "event_id", "event_type", "resource", "payload", "raw_text", "webhook_id",
    "accepted", "attempts", "next_at", "owner", "lease",
)  # fmt: skip
CLAIMED_COLUMNS = (
    "id, event_id, resource, payload, raw_text, webhook_id, accepted, attempts, next_at, last_error"
)


class Outbox:
    def __init__(self, store: Store, log_max: int, disable_after: int = 0) -> None:
        self.store = store
        self.log = DeliveryLog(store)
        self.counters = EndpointCounters(store)
        self.batches = PendingBatches(store)
        self.state = SourceState(store)
        self.log_max = log_max
        self.disable_after = disable_after

    def commit(self, changes: Changes) -> None:
        """Everything in one transaction; new rows get their ids."""
        conn = self.store.conn
        now = time.time()
        changes.switched = []
        with self.store.transaction():
            self._others_first(changes.new)
            ids = self.store.insert_ids(
                "pending",
                PENDING_COLUMNS,
                [
                    (row.endpoint_id, row.event.id, row.event.type, row.resource,
                     row.event.json_text(), row.event.raw_text, row.webhook_id, row.accepted, 0,
                     row.next_at, OWNER if row.claimed else None,
                     now + LEASE_S if row.claimed else None)
                    for row in changes.new
                ],
            )  # fmt: skip
            for row, new_id in zip(changes.new, ids, strict=True):
                row.id = new_id
            # Only rows still ours: if our lease ran out (a stalled process) and another
            # listener claimed a row, that one holds it now and sends it again. In id
            # order, as lease renewals lock them, so two listeners do not deadlock.
            if changes.retries:
                conn.executemany(
                    "UPDATE pending SET attempts = ?, next_at = ?, last_error = ?"
                    " WHERE id = ? AND owner = ?",
                    [(r.attempts, r.next_at, r.last_error, r.id, OWNER)
                     for r in sorted(changes.retries, key=lambda r: r.id)],
                )  # fmt: skip
            for ended, marks in in_chunks(sorted(changes.ended)):
                conn.execute(
                    f"DELETE FROM pending WHERE id IN ({marks}) AND owner = ?",  # noqa: S608
                    (*ended, OWNER),
                )
            batches = [
                (endpoint_id, None if b is None else (b.kind, b.due, b.to_doc()))
                for endpoint_id, b in changes.batches.items()
            ]
            self.batches.write(batches, OWNER, changes.merged)
            self.log.write(changes.records, self.log_max)
            self.state.remember(changes.seen)
            self.state.mark_acknowledged(changes.acked)
            for source, position in changes.cursors.items():
                self.state.write_cursor(source, position)
            # last: the endpoints' rows, which every listener's transactions update, stay
            # locked from here to the commit only
            self.counters.count(changes.records)
            self._switch_off(changes)

    def _switch_off(self, changes: Changes) -> None:
        """Endpoints this listener gave up on (``changes.disable``: 410 Gone, or its own
        count of failures), or whose consecutive failures, counted by every listener in the
        store, reached ``disable_after``, are switched off by the first transaction that
        finds them so; endpoints already off are noted too."""
        for endpoint_id, reason in changes.disable:
            did = self.counters.switch_off(endpoint_id, reason)
            changes.switched.append((endpoint_id, reason, did))
        last_error: dict[int, str | None] = {}
        for r in changes.records:
            if r.status == "failed":
                last_error[r.endpoint_id] = r.error
        gone = {i for i, _r in changes.disable}
        for endpoint_id, (enabled, count) in self.counters.failing(sorted(last_error)).items():
            if endpoint_id in gone:
                continue
            if not enabled:
                changes.switched.append((endpoint_id, "switched off in the store", False))
            elif self.disable_after and count >= self.disable_after:
                reason = f"{count} consecutive failed deliveries; last: {last_error[endpoint_id]}"
                did = self.counters.switch_off(endpoint_id, reason, self.disable_after)
                changes.switched.append((endpoint_id, reason, did))

    def take_slot(self, endpoint_id: int, per_minute: int, now: float) -> float:
        """A send to a rate-limited endpoint, counted for every listener: 0.0 if it may go
        now (noted), else when the endpoint's window reopens (unix time)."""
        conn, dialect = self.store.conn, self.store.dialect
        lock = " FOR UPDATE" if dialect.skip_locked else ""  # SQLite: the transaction's lock
        read = f"SELECT sent FROM pacing WHERE endpoint_id = ?{lock}"  # noqa: S608 - fixed text
        with self.store.transaction():
            row = conn.execute(read, (endpoint_id,)).fetchone()
            if row is None:
                conn.execute(dialect.insert_ignore("pacing", ("endpoint_id", "sent")),
                             (endpoint_id, "[]"))  # fmt: skip
                row = conn.execute(read, (endpoint_id,)).fetchone()
            sent = sorted(t for t in json.loads(row[0]) if t > now - WINDOW_S)
            if len(sent) >= per_minute:
                return sent[len(sent) - per_minute] + WINDOW_S
            conn.execute(
                "UPDATE pacing SET sent = ? WHERE endpoint_id = ?",
                (json.dumps([*sent, now]), endpoint_id),
            )
        return 0.0

    def claim(
        self, endpoint_id: int, limit: int, strict: bool = False
    ) -> tuple[list[PendingRow], int]:
        """The oldest unclaimed rows of an endpoint, now ours, oldest first; and how many
        were left because another process holds an earlier row of their resource (of any
        resource, with ``strict`` order): they wait until it ends. Claims of one endpoint
        are taken one process at a time (its ``endpoints`` row is locked), so two processes
        never each take a part of one resource's rows."""
        now = time.time()
        conn, dialect = self.store.conn, self.store.dialect
        with self.store.transaction():
            lock = ""  # SQLite: this transaction holds the only write lock
            if dialect.skip_locked:
                conn.execute("SELECT id FROM endpoints WHERE id = ? FOR UPDATE", (endpoint_id,))
                # rows another process is writing (released, ended) are skipped, not awaited
                lock = " FOR UPDATE SKIP LOCKED"
            candidates = conn.execute(
                "SELECT id, resource FROM pending WHERE endpoint_id = ?"  # noqa: S608
                f" AND (owner IS NULL OR lease < ?) ORDER BY id LIMIT ?{lock}",
                (endpoint_id, now, limit),
            ).fetchall()
            if not candidates:
                return [], 0
            blockers = self._held_elsewhere(
                endpoint_id, None if strict else {r[1] for r in candidates}, now
            )
            key = (lambda _r: "") if strict else (lambda r: r[1])
            ids = [r[0] for r in candidates if r[0] < blockers.get(key(r), r[0] + 1)]
            rows = []
            for part, marks in in_chunks(ids):
                conn.execute(
                    f"UPDATE pending SET owner = ?, lease = ? WHERE id IN ({marks})",  # noqa: S608
                    (OWNER, now + LEASE_S, *part),
                )
                rows += conn.execute(
                    f"SELECT {CLAIMED_COLUMNS} FROM pending WHERE id IN ({marks})",  # noqa: S608
                    part,
                ).fetchall()
        held_back = len(candidates) - len(ids)
        out = []
        for r in sorted(rows, key=lambda r: r["id"]):
            event = from_normalised(json.loads(r["payload"]))
            event.raw_text = r["raw_text"]
            out.append(
                PendingRow(
                    endpoint_id=endpoint_id,
                    event=event,
                    resource=r["resource"],
                    accepted=r["accepted"],
                    webhook_id=r["webhook_id"],
                    attempts=r["attempts"],
                    next_at=r["next_at"],
                    last_error=r["last_error"],
                    id=r["id"],
                    strict=strict,
                )
            )
        return out, held_back

    def _held_elsewhere(
        self, endpoint_id: int, resources: set[str] | None, now: float
    ) -> dict[str, int]:
        """The first row of each of ``resources`` (None: of the endpoint, keyed "") that
        another process holds for the endpoint (its lease runs)."""
        conn = self.store.conn
        held = "owner IS NOT NULL AND owner <> ? AND lease >= ?"
        if resources is None:
            first = conn.execute(
                f"SELECT min(id) FROM pending WHERE endpoint_id = ? AND {held}",  # noqa: S608
                (endpoint_id, OWNER, now),
            ).fetchone()[0]
            return {} if first is None else {"": first}
        out: dict[str, int] = {}
        for part, marks in in_chunks(sorted(resources)):
            out.update(
                conn.execute(
                    "SELECT resource, min(id) FROM pending WHERE endpoint_id = ?"  # noqa: S608
                    f" AND resource IN ({marks}) AND {held} GROUP BY resource",
                    (endpoint_id, *part, OWNER, now),
                ).fetchall()
            )
        return out

    def _others_first(self, rows: list[PendingRow]) -> None:
        """New rows we would hold at once are written unclaimed instead when the store has
        an earlier row of their resource (any row, with strict order) that is not ours:
        another process holds it, or nobody does yet. The claim that takes them later keeps
        the order."""
        conn = self.store.conn
        by_endpoint: dict[int, list[PendingRow]] = {}
        for row in rows:
            if row.claimed:
                by_endpoint.setdefault(row.endpoint_id, []).append(row)
        not_ours = "(owner IS NULL OR owner <> ?)"
        for endpoint_id, mine in by_endpoint.items():
            if mine[0].strict:
                found = conn.execute(
                    f"SELECT 1 FROM pending WHERE endpoint_id = ? AND {not_ours} LIMIT 1",  # noqa: S608
                    (endpoint_id, OWNER),
                ).fetchone()
                if found:
                    for row in mine:
                        row.claimed = False
                continue
            not_mine: set[str] = set()  # resources with a row another's, or nobody's
            for part, marks in in_chunks(sorted({row.resource for row in mine})):
                not_mine.update(
                    r[0]
                    for r in conn.execute(
                        "SELECT DISTINCT resource FROM pending WHERE endpoint_id = ?"  # noqa: S608
                        f" AND resource IN ({marks}) AND {not_ours}",
                        (endpoint_id, *part, OWNER),
                    )
                )
            for row in mine:
                if row.resource in not_mine:
                    row.claimed = False

    def take_orphan_batches(self) -> list[tuple[int, str, str, float, str]]:
        """Batches no running listener holds (an earlier run's, or one that died: on this
        host, its process is gone; elsewhere, it missed 3 heartbeats), now ours to send:
        (endpoint id, the key they are kept under until merged into ours, kind, due, doc).
        Each is moved to us in the store, so two listeners never both take one; if we die
        before merging it, it is an orphan again."""
        from datetime import UTC, datetime, timedelta

        from csnotify.store import log_time

        batches = self.batches.all()
        if all(owner.split("/", 1)[0] == OWNER for _e, owner, *_rest in batches):
            return []
        stale = log_time(datetime.now(UTC) - timedelta(seconds=STALE_AFTER_S))
        beats = {lst["id"]: lst["updated"] for lst in self.state.listeners() if lst.get("running")}
        out = []
        with self.store.transaction():
            for endpoint_id, owner, kind, due, doc in batches:
                holder = owner.split("/", 1)[0]
                if _here(holder):
                    held = holder == OWNER or _alive(holder)
                else:
                    held = beats.get(holder, "") >= stale
                key = f"{OWNER}/{owner.rsplit('/', 1)[-1]}"
                if not held and self.batches.take(endpoint_id, owner, key):
                    out.append((endpoint_id, key, kind, due, doc))
        return out

    def trim(self) -> None:
        """The run ends: trim what this process wrote to bounded tables since it last
        trimmed them (the delivery log, seen ids)."""
        with self.store.transaction():
            self.log.trim_written(self.log_max)
            self.state.trim_written()

    def renew(self) -> None:
        with self.store.transaction():
            self.store.conn.execute(
                "UPDATE pending SET lease = ? WHERE owner = ?", (time.time() + LEASE_S, OWNER)
            )

    def release(self) -> None:
        """Our claims end (we stop): the next process takes the rows at once."""
        with self.store.transaction():
            self.store.conn.execute(
                "UPDATE pending SET owner = NULL, lease = NULL WHERE owner = ?", (OWNER,)
            )

    def release_dead(self) -> int:
        """Claims of processes on this host that no longer run."""
        owners = [
            r[0]
            for r in self.store.conn.execute(
                "SELECT DISTINCT owner FROM pending WHERE owner LIKE ?", (f"{HOST}:%",)
            )
            if _here(r[0])  # LIKE: '_' in a host name matches any character
        ]
        dead = [o for o in owners if o != OWNER and not _alive(o)]
        if not dead:
            return 0
        with self.store.transaction():
            cursor = self.store.conn.executemany(
                "UPDATE pending SET owner = NULL, lease = NULL WHERE owner = ?",
                [(o,) for o in dead],
            )
        return cursor.rowcount

    def backlogs(self) -> dict[int, int]:
        return dict(
            self.store.conn.execute(
                "SELECT endpoint_id, count(*) FROM pending GROUP BY endpoint_id"
            ).fetchall()
        )


def _here(owner: str) -> bool:
    """``owner`` (``host:pid:pidns.nonce``) runs, or ran, where its pid can be checked:
    on this host and in this pid namespace (an owner written before the namespace was
    recorded, with no '.', only by host)."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != HOST:
        return False
    namespace, dot, _nonce = parts[2].partition(".")
    return not dot or namespace == PIDNS


def _alive(owner: str) -> bool:
    """``owner`` is ``host:pid:pidns.nonce``; a malformed one belongs to nobody."""
    try:
        pid = int(owner.rsplit(":", 2)[1])
    except (ValueError, IndexError):
        return False
    return alive(pid)


MAX_UNCOMMITTED = 5_000  # new rows waiting for a commit before intake waits


class Writer:
    """Runs the transactions: whatever ``changes`` holds is written by the next commit,
    then the callbacks registered with it run (acknowledgements, rows into windows)."""

    def __init__(
        self, outbox: Outbox, lock: asyncio.Lock, on_committed: Callable[[Changes], None]
    ) -> None:
        self.outbox = outbox
        self.lock = lock
        self.on_committed = on_committed
        self.changes = Changes()
        self._after: list[Callable[[], None]] = []
        self._work = asyncio.Event()
        self._committed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self.failures = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    def kick(self) -> None:
        self._work.set()

    def after(self, callback: Callable[[], None]) -> None:
        """``callback`` runs once what ``changes`` holds now is committed."""
        self._after.append(callback)
        self._work.set()

    @property
    def idle(self) -> bool:
        return not self._busy and not self.changes and not self._after

    async def room(self) -> None:
        while len(self.changes.new) >= MAX_UNCOMMITTED:
            self._committed.clear()
            await self._committed.wait()

    async def flush(self) -> None:
        """Commit what is waiting (and what is being committed) now."""
        while not self.idle:
            if self._task is None or self._task.done():
                await self._commit_once()
            else:
                self._committed.clear()
                self._work.set()
                await self._committed.wait()

    async def stop(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            await self._commit_once()

    async def _commit_once(self) -> None:
        changes, self.changes = self.changes, Changes()
        after, self._after = self._after, []
        self._busy = True
        try:
            if changes:
                await locked_thread(self.lock, self.outbox.commit, changes)
            self.failures = 0
        except Exception:
            self.failures += 1
            log.exception("could not write to the store; trying again")
            self._requeue(changes, after)
            await asyncio.sleep(min(5.0, 0.1 * 2**self.failures))
            self._work.set()
            return
        finally:
            self._busy = False
        try:
            self.on_committed(changes)
        except Exception:
            log.exception("a step after writing to the store failed")
        for callback in after:
            try:
                callback()
            except Exception:
                log.exception("a step after writing to the store failed")
        self._committed.set()

    def _requeue(self, changes: Changes, after: list[Callable[[], None]]) -> None:
        """A failed transaction wrote nothing: its changes go first in the next one."""
        newer, self.changes = self.changes, changes
        for name in CHANGE_FIELDS:
            mine = getattr(self.changes, name)
            if isinstance(mine, dict):
                mine.update(getattr(newer, name))
            else:
                mine.extend(getattr(newer, name))
        self._after = after + self._after
