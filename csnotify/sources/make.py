"""Building the source a listener reads, from the settings: one way for ``listen`` and
the demo."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    from csnotify.config import Settings


def make_source(
    kind: str,
    settings: Settings,
    *,
    interval: float = 30.0,
    since: datetime | None = None,
    once: bool = False,
    stdin: IO[str] | None = None,
) -> Any:
    """The source ``listen --source KIND`` (and the demo) reads: ``api`` with the
    cloudstack.* settings, ``amqp`` with the amqp.* ones, ``stdin`` reading ``stdin``. Its
    ``client``, if it has one, is the caller's to close."""
    if kind == "stdin":
        from csnotify.sources.stdin import StdinSource

        if stdin is None:
            raise ValueError("the stdin source reads the stream it is given: none was")
        return StdinSource(stdin)
    if kind == "amqp":
        from csnotify.sources.amqp import AmqpSource

        return AmqpSource(
            settings["amqp.url"],
            settings["amqp.exchange"],
            settings["amqp.queue"],
            settings["amqp.prefetch"],
            once=once,
            max_bytes=settings["amqp.max_message_bytes"],
        )
    from csnotify.cloudstack import CloudStackClient, Credentials
    from csnotify.names import from_settings
    from csnotify.sources.api import ApiSource

    client = CloudStackClient(
        Credentials.from_settings(settings), timeout=settings["delivery.timeout"] * 3
    )
    # listEvents gives no UUID of the account and user: looked up by name (its own client)
    return ApiSource(client, interval, since, once, names=from_settings(settings))
