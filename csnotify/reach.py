"""Where an event would go: each subscription's verdict (pattern, level, filter, scope)
and, for those it reaches, each endpoint's state and mute. ``csnotify match`` and the
API's ``GET /v1/match`` both ask this; nothing is sent.

Also the catalog of CloudStack's event types (``EventTypes.java``), for clients that
offer them to choose from."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from csnotify.errors import BadInput

if TYPE_CHECKING:
    from csnotify.events import Event
    from csnotify.models import Subscription
    from csnotify.store import Store


def typed_event(event_type: str | None, level: str, where: list[str]) -> Event:
    """The event ``match TYPE --level L --where FIELD=VALUE`` describes."""
    from csnotify.events import Event, now_iso
    from csnotify.matching import FILTER_FIELDS, parse_level

    if not event_type:
        raise BadInput("give an event TYPE (e.g. VM.START) or --event FILE")
    fields: dict[str, str] = {}
    for item in where:
        name, sep, value = item.partition("=")
        if not sep or name not in FILTER_FIELDS:
            raise BadInput(
                f"--where {item!r}: use FIELD=VALUE with one of {', '.join(FILTER_FIELDS)}"
            )
        fields[name] = value
    return Event(
        id="csnotify-match",
        type=event_type,
        level=parse_level(level),
        created=now_iso(),
        source="match",
        **fields,  # type: ignore[arg-type]
    )


def verdicts(store: Store, event: Event, subs: list[Subscription]) -> list[dict[str, Any]]:
    from csnotify.matching import explain
    from csnotify.mutes import MuteSet
    from csnotify.redact import mask_uri

    mutes = MuteSet(store.mutes())
    found = []
    for sub in subs:
        verdict = explain(sub, event).as_json()
        verdict["endpoints"] = []
        for ep in sub.endpoints if verdict["matched"] else []:
            mute = mutes.find(sub.name, ep.uri, event.type)
            muted = f"mute {mute.id} until {mute.until}: {mute.reason}" if mute else None
            verdict["endpoints"].append(
                {"uri": mask_uri(ep.uri), "enabled": ep.enabled, "muted": muted}
            )
        found.append(verdict)
    return found


@cache
def event_types() -> tuple[str, ...]:
    """CloudStack's event types (api/src/main/java/com/cloud/event/EventTypes.java)."""
    from importlib.resources import files

    text = files("csnotify").joinpath("event_types.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def catalog(pattern: str | None) -> list[str]:
    """Event types a pattern (``VM.*``) takes, as a subscription's pattern would."""
    import fnmatch

    from csnotify.matching import parse_pattern

    if pattern is None:
        return list(event_types())
    glob = parse_pattern(pattern).upper()
    return [t for t in event_types() if fnmatch.fnmatchcase(t.upper(), glob)]
