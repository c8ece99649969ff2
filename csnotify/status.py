"""What ``csnotify status`` reports: listeners and their counts, source cursors, the
queue's depth, and every endpoint's state and counters."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

from csnotify.events import parse_time
from csnotify.processes import PIDNS, alive
from csnotify.redact import mask_uri
from csnotify.store import NO_BACKLOG, SourceState, backlog

if TYPE_CHECKING:
    from csnotify.config import Settings
    from csnotify.models import Subscription
    from csnotify.store import Store


# A listener that missed this many heartbeats is stale (hung, or killed on another host).
MISSED_BEATS = 3


def listener_state(listener: dict[str, Any], now: float, host: str) -> tuple[str, str | None]:
    """``running``, ``stopped`` or ``stale``, and why, from what the listener last saved:
    a listener that says it runs is believed only while its process exists (same host) and
    its heartbeat is recent."""
    if not listener.get("running"):
        return "stopped", None
    pid = listener.get("pid")
    here = listener.get("host") == host and listener.get("pidns", PIDNS) == PIDNS
    if here and isinstance(pid, int) and not alive(pid, named="csnotify"):
        return "stopped", f"process {pid} is gone without stopping cleanly (killed?)"
    beat = listener.get("heartbeat_s")
    if isinstance(beat, (int, float)):
        age = now - parse_time(listener["updated"]).timestamp()
        if age > MISSED_BEATS * beat:
            where = f" on {listener.get('host')}" if listener.get("host") != host else ""
            return "stale", f"no heartbeat for {age:.0f} s from process {pid}{where}"
    return "running", None


def running_listeners(state: SourceState) -> list[dict[str, Any]]:
    """The listener runs on the store that run now (as ``status`` judges them)."""
    moment, host = time.time(), socket.gethostname()
    return [run for run in state.listeners() if listener_state(run, moment, host)[0] == "running"]


def collect(store: Store, now: float | None = None) -> dict[str, Any]:
    from csnotify.mutes import active

    cursors: list[dict[str, Any]] = []
    apis: list[dict[str, Any]] = []
    moment, host = time.time() if now is None else now, socket.gethostname()
    state = SourceState(store)
    listeners = state.listeners()  # every host's, from the store they share
    for listener in listeners:
        listener["state"], listener["state_reason"] = listener_state(listener, moment, host)
    for source, row in sorted(state.cursors().items()):
        position = row["position"]
        if source.startswith("serve:"):  # csnotify serve: its address and request counts
            api = {**position, "updated": row["updated"]}
            api["state"], api["state_reason"] = listener_state(api, moment, host)
            apis.append(api)
        else:
            cursors.append(
                {
                    "source": source,
                    "created": position.get("created"),
                    "ids_at_created": len(position.get("ids", [])),
                    "server_offset": position.get("server_offset"),
                    "server_zone": position.get("server_zone"),
                    "page_size": position.get("page_size"),
                    "updated": row["updated"],
                }
            )
    subs = store.subscriptions()
    backlogs = backlog(store)
    pending, claimed = store.conn.execute("SELECT count(*), count(owner) FROM pending").fetchone()
    endpoints = []
    for sub in subs:
        for ep in sub.endpoints:
            data = ep.as_json() | backlogs.get(ep.id or 0, NO_BACKLOG)
            endpoints.append(
                {"subscription": sub.name, "subscription_enabled": sub.enabled, **data}
            )
    return {
        "store": store.location,
        "listeners": listeners,
        "cursors": cursors,
        "queue": None,
        # deliveries every listener shares, and how many of them listeners hold now
        "backlog": {"pending": int(pending), "claimed": int(claimed)},
        "subscriptions": {"total": len(subs), "enabled": sum(s.enabled for s in subs)},
        "mutes": [m.as_json() for m in active(store)],
        "endpoints": endpoints,
        "apis": apis,
    }


def subscription_docs(
    store: Store, subs: list[Subscription], reveal: bool = False
) -> list[dict[str, Any]]:
    """``list``/``show --json``: subscriptions with each endpoint's pending deliveries."""
    backlogs = backlog(store)
    docs = []
    for sub in subs:
        data = sub.as_json(reveal)
        for doc, ep in zip(data["endpoints"], sub.endpoints, strict=True):
            doc.update(backlogs.get(ep.id or 0, NO_BACKLOG))
        docs.append(data)
    return docs


async def queue_depth(settings: Settings, timeout: float = 3.0) -> dict[str, Any]:
    """Messages waiting in ``amqp.queue`` (a passive declare: nothing is created)."""
    import asyncio

    import aio_pika

    name = settings["amqp.queue"]
    try:
        connection = await asyncio.wait_for(
            aio_pika.connect(settings["amqp.url"], timeout=timeout), timeout
        )
    except Exception as exc:  # noqa: BLE001 - any failure means "unknown", said as such
        return {
            "name": name,
            "depth": None,
            "error": f"cannot reach RabbitMQ at {mask_uri(settings['amqp.url'])}: {exc}",
        }
    async with connection:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, durable=True, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return {
                "name": name,
                "depth": None,
                "error": "the queue does not exist yet (start listen once)",
            }
        return {
            "name": name,
            "depth": int(queue.declaration_result.message_count),
            "consumers": int(queue.declaration_result.consumer_count),
        }
