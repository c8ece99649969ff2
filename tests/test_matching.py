"""Patterns, levels and filters, and the index against a brute-force scan."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from helpers import FIXTURES
from hypothesis import given, settings
from hypothesis import strategies as st

from csnotify.events import Event
from csnotify.matching import LEVEL_RANK, Filter, Matcher, parse_filter


@dataclass
class Sub:
    name: str
    patterns: list[str]
    level: str = "INFO"
    filters: list[Filter] = field(default_factory=list)
    enabled: bool = True


def ev(kind: str, level: str = "INFO", **kw: str) -> Event:
    return Event(id="e", type=kind, level=level, **kw)


def names(matcher: Matcher, event: Event) -> list[str]:
    return sorted(s.name for s in matcher.match(event))


def test_globs_are_case_insensitive() -> None:
    m = Matcher(
        [Sub("a", ["vm.*"]), Sub("b", ["*.create"]), Sub("c", ["VM.START"]), Sub("d", ["*"])]
    )
    assert names(m, ev("VM.START")) == ["a", "c", "d"]
    assert names(m, ev("vm.create")) == ["a", "b", "d"]
    assert names(m, ev("VOLUME.CREATE")) == ["b", "d"]
    assert names(m, ev("CREATE_TAGS")) == ["d"]


def test_other_globs() -> None:
    m = Matcher([Sub("q", ["V?.START"]), Sub("mid", ["*.SNAPSHOT.*"]), Sub("pre", ["VM*"])])
    assert names(m, ev("VM.START")) == ["pre", "q"]
    assert names(m, ev("VM.SNAPSHOT.CREATE")) == ["mid", "pre"]
    assert names(m, ev("VMSNAPSHOT.CREATE")) == ["pre"]


def test_level_is_a_minimum() -> None:
    m = Matcher([Sub("info", ["*"]), Sub("warn", ["*"], "WARN"), Sub("error", ["*"], "ERROR")])
    assert names(m, ev("X", "INFO")) == ["info"]
    assert names(m, ev("X", "WARN")) == ["info", "warn"]
    assert names(m, ev("X", "ERROR")) == ["error", "info", "warn"]


def test_filters_and_together() -> None:
    sub = Sub(
        "f", ["*"], filters=[parse_filter("account=admin"), parse_filter("resource_name~^web-")]
    )
    m = Matcher([sub])
    assert names(m, ev("X", account="admin", resource_name="web-01")) == ["f"]
    assert names(m, ev("X", account="admin", resource_name="db-01")) == []
    assert names(m, ev("X", account="Admin", resource_name="web-01")) == []  # exact is exact
    assert names(m, ev("X", resource_name="web-01")) == []


def test_disabled_subscriptions_never_match() -> None:
    m = Matcher([Sub("off", ["*"], enabled=False)])
    assert names(m, ev("VM.START")) == []


def test_a_subscription_matching_twice_is_listed_once() -> None:
    m = Matcher([Sub("x", ["VM.*", "*.START", "VM.START"])])
    assert names(m, ev("VM.START")) == ["x"]


PATTERN = st.from_regex(r"\A[A-Z*?]{0,3}(\.[A-Z*?]{1,3}){0,2}\Z").filter(bool)
TYPE = st.from_regex(r"\A[A-Z]{1,3}(\.[A-Z]{1,3}){0,2}\Z")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(PATTERN, min_size=1, max_size=3), min_size=1, max_size=12), TYPE)
def test_index_agrees_with_brute_force(pattern_lists: list[list[str]], kind: str) -> None:
    subs = [Sub(f"s{i:02d}", p) for i, p in enumerate(pattern_lists)]
    expected = [
        s.name for s in subs if any(fnmatch.fnmatchcase(kind, p.upper()) for p in s.patterns)
    ]
    assert names(Matcher(subs), ev(kind)) == expected


def test_every_cloudstack_event_type_matches_its_own_pattern() -> None:
    types = (FIXTURES / "event_types.txt").read_text().split()
    m = Matcher([Sub(t, [t]) for t in types])
    for t in types:
        assert names(m, ev(t)) == [t]
    assert LEVEL_RANK["ERROR"] > LEVEL_RANK["WARN"] > LEVEL_RANK["INFO"]
