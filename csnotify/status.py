"""What ``csnotify status`` reports: listeners and their counts, source cursors, the
queue's depth, and every endpoint's state and counters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from csnotify.mutes import active
from csnotify.redact import mask_uri
from csnotify.store import SourceState

if TYPE_CHECKING:
    from csnotify.config import Settings
    from csnotify.store import Store


def collect(store: Store) -> dict[str, Any]:
    listeners, cursors = [], []
    for source, row in sorted(SourceState(store).cursors().items()):
        position = row["position"]
        if source.startswith("listen:"):
            listeners.append(
                {"source": source.removeprefix("listen:"), **position, "updated": row["updated"]}
            )
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
    endpoints = []
    for sub in subs:
        for ep in sub.endpoints:
            data = ep.as_json()
            endpoints.append(
                {"subscription": sub.name, "subscription_enabled": sub.enabled, **data}
            )
    return {
        "store": str(store.path),
        "listeners": listeners,
        "cursors": cursors,
        "queue": None,
        "subscriptions": {"total": len(subs), "enabled": sum(s.enabled for s in subs)},
        "mutes": [m.as_json() for m in active(store)],
        "endpoints": endpoints,
    }


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
