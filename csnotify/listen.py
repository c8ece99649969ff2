"""``csnotify listen``: a source feeding the dispatcher until told to stop.

The listener owns what every source shares: the dispatcher (or, with --dry-run, a matcher
that only shows), --print, subscription reloads when another process changes the store,
remembering handled event ids, and a clean stop on SIGTERM/SIGINT: no new events, attempts
in flight finish and are acknowledged, the rest is left for redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from csnotify.clock import now_iso
from csnotify.delivery.outbox import OWNER
from csnotify.delivery.pipeline import Pipeline
from csnotify.delivery.settings import DeliverySettings
from csnotify.events import Event, alert_level, describe
from csnotify.processes import PIDNS
from csnotify.redact import mask_uri
from csnotify.routes import routes
from csnotify.store import SourceState

if TYPE_CHECKING:
    from csnotify.models import Subscription
    from csnotify.names import Names
    from csnotify.store import Store

log = logging.getLogger("csnotify")
RELOAD_EVERY_S = 1.0
STATS_EVERY_S = 0.5
HEARTBEAT_S = 5.0
FORGET_LISTENERS_DAYS = 7  # runs not heard of for this long leave status


class Source(Protocol):
    name: str

    async def run(self, listener: Listener) -> None: ...

    async def subscriptions_changed(self, subscriptions: list[Subscription]) -> None: ...


@dataclass
class ListenOptions:
    once: bool = False
    dry_run: bool = False
    print_events: bool = False
    duration: float | None = None  # stop by itself after this many seconds


@dataclass
class Listener:
    store: Store
    settings: DeliverySettings
    options: ListenOptions
    out: Callable[[str], None]
    on_outcome: Callable[[Any], None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    hurry: asyncio.Event = field(default_factory=asyncio.Event)  # a signal: wait for no backlog
    names: Names | None = None  # resolves the UUIDs of bus events (API keys configured)
    alert_levels: dict[str, str] = field(default_factory=dict)
    state: SourceState = field(init=False)
    dispatcher: Pipeline = field(init=False)
    rejected: int = 0
    events: int = 0
    started: str = ""
    _last_stats: dict[str, Any] = field(default_factory=dict)
    _last_saved: float = 0.0
    _planned_end: bool = False

    def __post_init__(self) -> None:
        self.state = SourceState(self.store)
        self.dispatcher = Pipeline(self.store, self.settings, self.on_outcome, restore=True)
        self.subscriptions: list[Subscription] = []
        self._in_order = asyncio.Lock()  # events are accepted in arrival order

    # -- what sources call --------------------------------------------------------------

    async def handle(
        self, event: Event, on_done: Callable[[], Any] | None = None, remember: bool = False
    ) -> None:
        """Accept one event; ``on_done`` runs once its deliveries are safe in the store.
        With ``remember`` its id is kept (in the same transaction) to spot redeliveries.

        A bus event's names are resolved first (its look-ups start at once; it waits at
        most ``cloudstack.lookup_timeout`` from its arrival), and events are accepted in
        the order they arrived, whatever their look-ups took."""
        if event.category == "AlertEvent" and self.alert_levels:
            event.level = alert_level(event, self.alert_levels)
        if self.names is None or event.source != "amqp":
            await self._accept(event, on_done, remember)
            return
        deadline = asyncio.get_running_loop().time() + self.names.timeout
        self.names.start(event)
        async with self._in_order:
            await self.names.enrich(event, deadline)
            await self._accept(event, on_done, remember)

    async def _accept(
        self, event: Event, on_done: Callable[[], Any] | None, remember: bool
    ) -> None:
        self.events += 1
        if self.options.print_events:
            self.out(event.json_text())
        if self.options.dry_run:
            self._show(event)
            return  # nothing sent, nothing acknowledged
        await self.dispatcher.submit(event, on_done, remember)

    def acknowledge(self, event_id: str, ack: Callable[[], Any]) -> None:
        """``ack`` once the store says this (remembered) event is acknowledged."""
        if self.options.dry_run:
            ack()
        else:
            self.dispatcher.acknowledge(event_id, ack)

    def checkpoint(self, source: str, position: dict[str, Any]) -> None:
        """A source position, written with the deliveries of the events before it."""
        if not self.options.dry_run:
            self.dispatcher.checkpoint(source, position)

    def reject(self, where: str, reason: str) -> None:
        self.rejected += 1
        log.warning("rejected %s: %s", where, reason)

    async def db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a store call off the event loop, one at a time with the dispatcher's writes."""
        return await self.dispatcher.db(fn, *args)

    async def sleep(self, seconds: float) -> bool:
        """Wait, or less if told to stop; True if we should stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        return self.stop.is_set()

    # -- running -------------------------------------------------------------------------

    def _show(self, event: Event) -> None:
        """--dry-run: where the event would go, and why each other subscription skips it."""
        found = routes(self.subscriptions, self.dispatcher.mutes, event)
        targets = [
            f"{route.subscription.name} -> {mask_uri(r.endpoint.uri)}"
            + (f" (muted by mute {r.mute.id})" if r.mute else "")
            for route in found
            for r in route.endpoints
            if r.endpoint.enabled
        ]
        self.out(
            f"{event.type} {event.id} [{describe(event)}]: "
            + ("; ".join(targets) if targets else "no subscription")
        )
        for route in found:
            if not route.taken:
                self.out(f"  skips {route.subscription.name}: {route.verdict.reason}")

    async def keep_names(self, resolver: Names) -> None:
        """Names read by an earlier run come from the store, new ones are kept there (not
        under --dry-run): the listener's own resolver (bus events), or a source's."""
        from csnotify.store import NameStore

        names = NameStore(self.store)
        resolver.restore(await self.db(names.load, resolver.clock() - resolver.ttl))

        async def save(rows: list[Any]) -> None:
            await self.db(names.save, rows)

        if not self.options.dry_run:  # --dry-run writes nothing
            resolver.save = save

    async def _load(self) -> list[Subscription]:
        subs: list[Subscription] = await self.db(self.store.subscriptions)
        mutes = await self.db(self.store.mutes)
        self.subscriptions = subs
        self.dispatcher.load(subs, mutes)
        return subs

    async def _watch(self, source: Source) -> None:
        while not await self.sleep(RELOAD_EVERY_S):
            if await self.db(self.state.changed):
                subs = await self._load()
                log.info("subscriptions changed; %d loaded", len(subs))
                await source.subscriptions_changed(subs)

    async def _stats_loop(self, source: Source) -> None:
        """Saved at once (status shows a listener from its start), then every
        STATS_EVERY_S while something changed, and at least every HEARTBEAT_S."""
        while True:
            await self.save_stats(source)
            if await self.sleep(STATS_EVERY_S):
                return

    async def save_stats(self, source: Source) -> None:
        """What ``csnotify status`` shows about this listener (nothing under --dry-run)."""
        if self.options.dry_run:
            return
        stats = self.dispatcher.stats
        doc = {
            "events": self.events,
            "rejected": self.rejected,
            "delivered": stats.delivered,
            "failed": stats.failed,
            "muted": stats.muted,
            "folded": stats.folded,
            "started": self.started,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "pidns": PIDNS,  # with the host: where the pid can be checked
            "heartbeat_s": HEARTBEAT_S,  # saved at least this often: status tells stale ones
            "running": not self.stop.is_set(),
        }
        beat = time.monotonic()
        if doc != self._last_stats or beat - self._last_saved >= HEARTBEAT_S:
            self._last_stats, self._last_saved = doc, beat
            await self.db(self.state.save_listener, OWNER, source.name, doc)

    async def run(self, source: Source) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
        # registered first: status, and store copy --replace, see it while it loads
        self.started = now_iso()
        await self.save_stats(source)
        await self.dispatcher.__aenter__()
        if self.names is not None:
            await self.keep_names(self.names)
        subs = await self._load()
        await self.db(self.state.changed)
        if not self.options.dry_run:
            await self.db(self.state.forget_listeners, FORGET_LISTENERS_DAYS)
        await source.subscriptions_changed(subs)
        helpers = [
            asyncio.create_task(self._watch(source)),
            asyncio.create_task(self._stats_loop(source)),
        ]
        if self.options.duration is not None:
            helpers.append(asyncio.create_task(self._stop_after(self.options.duration)))
        try:
            await source.run(self)
        finally:
            if self.names is not None:
                await self.names.close()
            await self.finish()
            self.stop.set()
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self.save_stats(source)
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    async def finish(self) -> None:
        """End delivery: after a signal (or --duration), only what is in flight; after
        --once or end of input, everything queued. Sources call this before they close
        their connection, so acknowledgements can still go out."""
        await self.dispatcher.close(
            drain=self._planned_end or not self.stop.is_set(), abort=self.hurry
        )

    async def _stop_after(self, seconds: float) -> None:
        if not await self.sleep(seconds):
            self._planned_end = True  # --duration: like --once, what is held back goes out
        self.stop.set()

    def _on_signal(self, sig: int) -> None:
        """Stop taking events; attempts in flight finish, the rest stays in the store. Also
        while --once, --duration or the end of input waits for the backlog to go out."""
        if not self.hurry.is_set():
            log.info("%s: finishing deliveries in flight, then stopping", signal.Signals(sig).name)
        self.hurry.set()
        self.stop.set()
