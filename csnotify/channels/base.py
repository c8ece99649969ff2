"""What every channel shares: the message to deliver, the outcome of one attempt."""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from csnotify.events import Event
    from csnotify.models import Subscription

WEBHOOK_ID_NAMESPACE = uuid.UUID("0b3c4a52-2f1e-4a43-9d8c-5f2b7e9c1d07")
_NAMESPACE_BYTES = WEBHOOK_ID_NAMESPACE.bytes
ERROR_MAX = 500


@dataclass
class Message:
    event: Event
    subscription: Subscription
    uri: str
    fixed_id: str | None = None  # redeliver: the webhook-id recorded in the delivery log
    address: str | None = None  # connect here, not where the host name resolves (guard.py)

    @cached_property
    def webhook_id(self) -> str:
        """Stable for this event and endpoint, the same on every retry and redelivery."""
        if self.fixed_id:
            return self.fixed_id
        seed = f"{self.event.id}|{self.subscription.name}|{self.uri}"
        return "msg_" + uuid5_hex(seed)


def uuid5_hex(name: str) -> str:
    """``uuid.uuid5(WEBHOOK_ID_NAMESPACE, name).hex``, without making UUID objects (it runs
    once per delivery)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])  # noqa: S324 - UUIDv5 is SHA-1 by definition
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest.hex()


@dataclass
class Attempt:
    ok: bool
    status: int | None = None
    error: str | None = None
    retryable: bool = True
    retry_after: float | None = None
    gone: bool = False  # the receiver said 410 Gone: switch the endpoint off now

    @classmethod
    def failed(cls, error: str, retryable: bool = True, status: int | None = None) -> Attempt:
        return cls(ok=False, status=status, error=error[-ERROR_MAX:], retryable=retryable)


class Channel(Protocol):
    async def send(self, message: Message, timeout: float) -> Attempt: ...

    async def close(self) -> None: ...


async def attempt_once(channel: Channel, message: Message, timeout: float, label: str) -> Attempt:
    """One attempt that always ends as an outcome: a channel that raises (a bug, a value
    its library refuses) is a failed attempt with the error, recorded and counted like any
    other, never an event acknowledged and lost."""
    try:
        return await channel.send(message, timeout)
    except Exception as exc:
        logging.getLogger("csnotify").exception("the channel for %s raised", label)
        return Attempt.failed(f"internal error: {type(exc).__name__}: {exc}")
