"""Pacing for human channels: a rate limit per endpoint, and batches of events sent as
one message (a group collected for --group-wait, or a digest of what the limit held back).

A batch is a value: counts by type, the highest level, and the first LISTED events. It
becomes one event of type CSNOTIFY.DIGEST, which every channel renders like any other
(human channels get a title and body made for it, see channels/human.py).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from csnotify.clock import now_iso
from csnotify.events import Event, from_normalised
from csnotify.matching import LEVEL_RANK

DIGEST_TYPE = "CSNOTIFY.DIGEST"
WINDOW_S = 60.0
LISTED = 50  # events spelled out in a digest; the rest are only counted
TYPES_SHOWN = 6
GROUP, DIGEST = "group", "digest"
_BATCH_NAMESPACE = uuid.UUID("9d0f3c1e-58a4-4f0b-8f2a-6c1d7e3b2a90")


class Window:
    """At most ``per_minute`` messages in any 60 s."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.sent: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self.sent and self.sent[0] <= now - WINDOW_S:
            self.sent.popleft()

    def allows(self, now: float) -> bool:
        self._expire(now)
        return len(self.sent) < self.per_minute

    def note(self, now: float) -> None:
        self.sent.append(now)

    def reopens(self, now: float) -> float:
        """When the next message may go."""
        self._expire(now)
        if len(self.sent) < self.per_minute:
            return now
        return self.sent[len(self.sent) - self.per_minute] + WINDOW_S


def _brief(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "level": event.level,
        "created": event.created,
        "resource_name": event.resource_name,
        "description": event.description,
    }


@dataclass
class Batch:
    """Events waiting to go out as one message at ``due`` (unix time)."""

    kind: str  # GROUP or DIGEST
    due: float
    count: int = 0
    types: Counter[str] = field(default_factory=Counter)
    level: str = "INFO"
    listed: list[dict[str, Any]] = field(default_factory=list)
    first: Event | None = None  # sent as itself when it stays alone in a group

    def add(self, event: Event) -> None:
        self.count += 1
        self.types[event.type] += 1
        if LEVEL_RANK.get(event.level, 0) > LEVEL_RANK.get(self.level, 0):
            self.level = event.level
        if len(self.listed) < LISTED:
            self.listed.append(_brief(event))
        if self.first is None:
            self.first = event

    def merge(self, other: Batch) -> None:
        """Take in a batch another listener left (its events are this one's now); the
        earlier of the two times is kept."""
        if self.count == 0:
            self.first = other.first
        self.count += other.count
        self.types.update(other.types)
        if LEVEL_RANK.get(other.level, 0) > LEVEL_RANK.get(self.level, 0):
            self.level = other.level
        self.listed += other.listed[: max(0, LISTED - len(self.listed))]
        self.due = min(self.due, other.due)

    def summary(self) -> str:
        """``37 more events: 30 VM.STOP, 7 VM.START``"""
        ranked = sorted(self.types.items(), key=lambda kv: (-kv[1], kv[0]))
        parts = [f"{n} {t}" for t, n in ranked[:TYPES_SHOWN]]
        others = sum(n for _t, n in ranked[TYPES_SHOWN:])
        if others:
            parts.append(f"{others} of {len(ranked) - TYPES_SHOWN} other types")
        noun = "event" if self.count == 1 else "events"
        more = " more" if self.kind == DIGEST else ""
        return f"{self.count}{more} {noun}: {', '.join(parts)}"

    def message_event(self, endpoint_key: str) -> Event:
        """What is sent: the event itself if the batch holds only one, else a digest."""
        if self.count == 1 and self.first is not None:
            return self.first
        first_id = self.listed[0]["id"] if self.listed else ""
        seed = f"{endpoint_key}|{first_id}|{self.count}"
        return Event(
            id=str(uuid.uuid5(_BATCH_NAMESPACE, seed)),
            type=DIGEST_TYPE,
            level=self.level,
            state="Digest",
            category="csnotify",
            created=now_iso(),
            resource_type="Digest",
            resource_name=f"{self.count} events",
            description=self.summary(),
            source="csnotify",
            raw={
                "kind": self.kind,
                "count": self.count,
                "types": dict(self.types),
                "events": self.listed,
                "unlisted": self.count - len(self.listed),
            },
        )

    # -- persistence (so a restart sends what was held back) --------------------------

    def to_doc(self) -> str:
        return json.dumps(
            {
                "count": self.count,
                "types": dict(self.types),
                "level": self.level,
                "listed": self.listed,
                "first": self.first.as_json() if self.first is not None else None,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_doc(cls, kind: str, due: float, doc: str) -> Batch:
        data = json.loads(doc)
        first = from_normalised(data["first"]) if data.get("first") else None
        return cls(
            kind=kind,
            due=due,
            count=int(data["count"]),
            types=Counter({str(k): int(v) for k, v in data["types"].items()}),
            level=str(data["level"]),
            listed=list(data["listed"]),
            first=first,
        )


def digest_text(event: Event) -> tuple[str, str]:
    """Title and body of a digest for people."""
    raw = event.raw
    lines = [event.description or ""]
    listed = raw.get("events", [])
    if listed:
        lines.append("")
    for item in listed:
        name = f" {item['resource_name']}" if item.get("resource_name") else ""
        text = f": {item['description']}" if item.get("description") else ""
        lines.append(f"{item['created']} {item['level']} {item['type']}{name}{text}")
    if raw.get("unlisted"):
        lines.append(f"... and {raw['unlisted']} more not listed here")
    return f"[CloudStack] {event.description}", "\n".join(lines)
