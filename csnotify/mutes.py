"""Mutes (maintenance windows): events a mute covers are not sent; they are recorded as
muted, counted apart from failures, and the mute ends by itself at its ``until``.

A mute names one subscription or all of them, and may narrow itself to one endpoint
and to event types matching a pattern.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from csnotify.clock import utc_iso
from csnotify.errors import BadInput, NotFound
from csnotify.events import parse_duration, parse_time
from csnotify.matching import parse_pattern
from csnotify.models import Mute
from csnotify.redact import mask_uri
from csnotify.subscriptions import find

if TYPE_CHECKING:
    from csnotify.store import Store

MAX_REASON = 500
MAX_MUTE = timedelta(days=366)


class MuteSet:
    """The mutes a dispatcher checks before each delivery; expired ones never match."""

    def __init__(self, mutes: list[Mute]) -> None:
        self.mutes = mutes
        self._by_subscription: dict[str | None, list[Mute]] = {}
        for mute in mutes:
            self._by_subscription.setdefault(mute.subscription, []).append(mute)

    def find(self, subscription: str, uri: str, event_type: str) -> Mute | None:
        if not self.mutes:
            return None
        now = time.time()
        for key in (subscription, None):
            for mute in self._by_subscription.get(key, ()):
                if mute.covers(subscription, uri, event_type, now):
                    return mute
        return None


@dataclass
class MuteInput:
    name: str | None = None
    every: bool = False  # --all
    endpoint: str | None = None
    pattern: str | None = None
    duration: str | None = None  # --for
    until: str | None = None
    reason: str | None = None


def _until(spec: MuteInput, now: datetime) -> datetime:
    if (spec.duration is None) == (spec.until is None):
        raise BadInput("say how long: give --for DURATION (e.g. 2h) or --until TIME")
    if spec.duration is not None:
        length = parse_duration(spec.duration, "--for")
        if length <= timedelta(0):
            raise BadInput(f"--for {spec.duration!r} is not a positive duration")
        end = now + length
    else:
        end = parse_time(spec.until or "")
        if end <= now:
            raise BadInput(f"--until {spec.until!r} is in the past; give a time still to come")
    if end - now > MAX_MUTE:
        raise BadInput("a mute can last at most 366 days; give a shorter --for or --until")
    if end.microsecond:  # kept to the second: round up, so it lasts at least as asked
        end = end.replace(microsecond=0) + timedelta(seconds=1)
    return end


def _endpoint(store: Store, spec: MuteInput) -> str | None:
    """The endpoint's real URI (the user may type the masked form that list shows)."""
    if spec.endpoint is None:
        return None
    if spec.name is not None:
        return find(store, spec.name).endpoint(spec.endpoint).uri
    for sub in store.subscriptions():
        with contextlib.suppress(NotFound):
            return sub.endpoint(spec.endpoint).uri
    raise NotFound(f"no subscription has endpoint {mask_uri(spec.endpoint)!r}; see 'csnotify list'")


def mute(store: Store, spec: MuteInput) -> Mute:
    """Validate everything, then write one row."""
    if spec.every == (spec.name is not None):
        raise BadInput("name a subscription or give --all (for every subscription)")
    reason = " ".join((spec.reason or "").split())
    if not reason:
        raise BadInput("give --reason TEXT: it is shown in 'csnotify mutes' and in the log")
    if len(reason) > MAX_REASON:
        raise BadInput(f"--reason is longer than {MAX_REASON} characters")
    now = datetime.now(UTC)
    end = _until(spec, now)
    pattern = parse_pattern(spec.pattern) if spec.pattern is not None else None
    with store.transaction():  # the subscription it names cannot vanish before it is saved
        name = find(store, spec.name).name if spec.name is not None else None
        uri = _endpoint(store, spec)
        made = Mute(name, uri, pattern, reason, utc_iso(now), utc_iso(end))
        made.id = store.insert_mute(made)
        store.delete_expired_mutes(utc_iso(now - timedelta(days=1)))
    return made


def active(store: Store) -> list[Mute]:
    now = time.time()
    return [m for m in store.mutes() if m.ends > now]


def unmute(store: Store, ids: list[int]) -> list[Mute]:
    now = datetime.now(UTC).replace(microsecond=0)
    with store.transaction():
        known = {m.id: m for m in store.mutes() if m.ends > now.timestamp()}
        missing = [i for i in ids if i not in known]
        if missing:
            raise NotFound(
                f"no mute in force with id {', '.join(map(str, missing))}; see 'csnotify mutes'"
                " for the ids"
            )
        store.end_mutes(ids, utc_iso(now))
    return [known[i] for i in ids]
