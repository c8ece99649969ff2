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
    from csnotify.clock import now_iso
    from csnotify.events import Event
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
    """Each subscription's verdict as JSON, with its endpoints' state and mute."""
    from csnotify.mutes import MuteSet
    from csnotify.redact import mask_uri
    from csnotify.routes import routes

    found = []
    for route in routes(subs, MuteSet(store.mutes()), event):
        verdict = route.verdict.as_json()
        verdict["endpoints"] = [
            {"uri": mask_uri(r.endpoint.uri), "enabled": r.endpoint.enabled,
             "muted": f"mute {r.mute.id} until {r.mute.until}: {r.mute.reason}" if r.mute else None}
            for r in route.endpoints
        ]  # fmt: skip
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
