"""Which subscriptions an event reaches: type patterns, minimum level, categories and
states, ``--where`` filters.

Patterns are case-insensitive globs on the event type (``VM.*``, ``*.CREATE``, ``*``).
Level is a minimum (INFO < WARN < ERROR). Filters AND together: ``FIELD=VALUE`` is an
exact match, ``FIELD~REGEX`` a regular-expression search. Categories and states are
CloudStack's names; with neither (and no ``--where`` on them), a subscription gets each
operation's outcome once (its Completed ActionEvent, or the Created one of a create phase
that failed) and alerts.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from csnotify.errors import BadInput, did_you_mean
from csnotify.fields import CATEGORIES, EVENT_FIELDS, is_outcome

LEVELS = ("INFO", "WARN", "ERROR")
LEVEL_RANK = {name: rank for rank, name in enumerate(LEVELS)}
_LEVEL_ALIASES = {"WARNING": "WARN"}

# Fields of the normalised event a --where filter may test.
FILTER_FIELDS = tuple(f for f in EVENT_FIELDS if f not in ("id", "level", "created"))

_PATTERN = re.compile(r"^[A-Za-z0-9_\-*?]+(\.[A-Za-z0-9_\-*?]+)*$")
MAX_PATTERN = 200
S = TypeVar("S")


def parse_pattern(text: str) -> str:
    pattern = text.strip()
    if not pattern:
        raise BadInput("empty event-type pattern; give one such as 'VM.*' or '*'")
    if len(pattern) > MAX_PATTERN or not _PATTERN.match(pattern):
        raise BadInput(
            f"malformed event-type pattern {text!r}: use letters, digits, '_', '-', '.' and"
            " the wildcards '*' and '?', e.g. 'VM.*', '*.CREATE', 'ALERT.*'"
        )
    return pattern


def parse_level(text: str) -> str:
    level = text.strip().upper()
    level = _LEVEL_ALIASES.get(level, level)
    if level not in LEVEL_RANK:
        raise BadInput(f"unknown level {text!r}; use one of {', '.join(LEVELS)}")
    return level


# CloudStack's names for what ``--state`` tests: ActionEvent phases (Event.State),
# async-job phases (the routing key's type) and statuses (JobInfo.Status), and the states
# of the state machines that publish ResourceStateEvents (VirtualMachine.State,
# Volume.State, Snapshot.State, Network.State).
ACTION_STATES = ("Created", "Scheduled", "Started", "Completed")
JOB_STATES = ("submit", "update", "complete", "IN_PROGRESS", "SUCCEEDED", "FAILED", "CANCELLED")
RESOURCE_STATES = (
    "Starting", "Running", "Stopping", "Stopped", "Destroyed", "Expunging", "Migrating",
    "Error", "Unknown", "Shutdown", "Restoring", "Allocated", "Creating", "Ready", "Resizing",
    "Copying", "UploadOp", "Uploading", "Uploaded", "Destroy", "Expunged", "Attaching",
    "Snapshotting", "RevertSnapshotting", "CreatedOnPrimary", "BackingUp", "BackedUp",
    "Destroying", "Hidden", "Setup", "Implementing", "Implemented",
)  # fmt: skip
STATES = tuple(dict.fromkeys((*ACTION_STATES, *JOB_STATES, *RESOURCE_STATES)))


def _cloudstack_name(text: str, names: tuple[str, ...], what: str) -> str:
    """``text`` as CloudStack spells it (any case), or a one-line error with suggestions."""
    value = text.strip()
    by_folded = {n.lower(): n for n in names}
    if value.lower() in by_folded:
        return by_folded[value.lower()]
    hint = did_you_mean(value, names, any_case=True) or (
        f"; CloudStack's are {', '.join(names[:12])}{', ...' if len(names) > 12 else ''}"
    )
    raise BadInput(f"unknown {what} {text!r}{hint}")


ALL = "*"  # --category '*': every category and phase


def parse_category(text: str) -> str:
    if text.strip() == ALL:
        return ALL
    return _cloudstack_name(text, CATEGORIES, "--category")


def parse_state(text: str) -> str:
    return _cloudstack_name(text, STATES, "--state")


def state_words(state: str | None) -> set[str]:
    """An async job's state is ``phase/status`` (``complete/FAILED``): either word matches."""
    return set(state.split("/")) if state else set()


def domain_path(event: Any) -> str | None:
    """The event's domain as a path (ROOT, ROOT/customers) when it is known: listEvents'
    ``domainpath`` ("/" or "/customers/"), or the path listDomains gave a bus event's
    domain; else None."""
    looked_up = getattr(event, "domain_path", None)
    if looked_up:
        return str(looked_up).strip("/")
    raw = getattr(event, "raw", None)
    text = raw.get("domainpath") if isinstance(raw, dict) else None
    if not isinstance(text, str) or not text:
        return None
    inner = text.strip("/")
    if inner == "ROOT" or inner.startswith("ROOT/"):
        return inner
    return f"ROOT/{inner}" if inner else "ROOT"


@dataclass(frozen=True)
class Scope:
    """What a subscription takes of a matching type, by category and state."""

    categories: frozenset[str]
    states: frozenset[str]
    outcomes_only: bool  # neither given: each operation's outcome, and alerts
    actions_only: bool  # --format cloudstack: ActionEvents, as CloudStack's webhooks
    # An API-made subscription's owner (scope, account, domain path): it takes only the
    # events of that account, or of that domain and its subdomains. None: everything.
    owner: tuple[str, str | None, str] | None = None

    @classmethod
    def of(cls, sub: Any) -> Scope:
        categories, states = getattr(sub, "categories", []), getattr(sub, "states", [])
        on_where = any(f.field in ("category", "state") for f in sub.filters)
        explicit = bool(categories or states) or on_where
        owner_scope = getattr(sub, "owner_scope", None)
        return cls(
            frozenset(categories),
            frozenset(states),
            not explicit,
            getattr(sub, "format", "json") == "cloudstack",
            (owner_scope, sub.owner_account, sub.owner_domain)
            if owner_scope in ("account", "domain")
            else None,
        )

    def owner_reason(self, event: Any) -> str | None:
        """None if the event belongs to the owner's account (or domain), else why not.
        The domain is compared by path where the event carries one (listEvents'
        ``domainpath``), else by name (the leaf of the owner's path): bus events get
        their account and domain names through the API (csnotify/names.py); without
        them an owned subscription takes nothing from the bus."""
        if self.owner is None:
            return None
        scope, account, domain = self.owner
        path = domain_path(event)
        if path is not None:
            inside = path == domain or (scope == "domain" and path.startswith(domain + "/"))
        else:
            inside = bool(event.domain) and event.domain == domain.rsplit("/", 1)[-1]
        if not inside:
            shown = path or event.domain or "unknown"
            return f"the event's domain ({shown}) is outside its owner's ({domain})"
        if scope == "account" and event.account != account:
            return (
                f"the event's account ({event.account or 'unknown'}) is not its owner's ({account})"
            )
        return None

    def reason(self, event: Any) -> str | None:
        """None if the event is in scope, else why not (for people)."""
        outside = self.owner_reason(event)
        if outside is not None:
            return outside
        if self.actions_only and event.category != "ActionEvent":
            return (
                f"--format cloudstack gets ActionEvents only, as CloudStack's webhooks"
                f" (this is a {event.category})"
            )
        if self.outcomes_only and not is_outcome(event):
            return (
                f"not the outcome phase ({event.category} {event.state or ''}".rstrip()
                + "); by default a subscription gets each operation once, its Completed"
                " ActionEvent (or the Created one of a create that failed), and alerts:"
                " add --category/--state to get others"
            )
        if self.categories and ALL not in self.categories and event.category not in self.categories:
            return f"category {event.category} is not {' or '.join(sorted(self.categories))}"
        if self.states and not state_words(event.state) & self.states:
            return f"state {event.state} is not {' or '.join(sorted(self.states))}"
        return None


@dataclass(frozen=True)
class Filter:
    field: str
    op: str  # "=" exact, "~" regex search
    value: str

    def __str__(self) -> str:
        return f"{self.field}{self.op}{self.value}"

    @property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.value)


def parse_filter(text: str) -> Filter:
    """``account=admin`` or ``resource_name~^web-``: split at the first '=' or '~'."""
    positions = [i for i in (text.find("="), text.find("~")) if i >= 0]
    if not positions:
        raise BadInput(f"malformed --where {text!r}: use FIELD=VALUE or FIELD~REGEX")
    at = min(positions)
    field, op, value = text[:at].strip(), text[at], text[at + 1 :]
    if not field:
        raise BadInput(f"malformed --where {text!r}: the field name is missing before {op!r}")
    if field not in FILTER_FIELDS:
        raise BadInput(
            f"unknown field {field!r} in --where {text!r}; fields: {', '.join(FILTER_FIELDS)}"
        )
    if op == "~":
        try:
            re.compile(value)
        except re.error as exc:
            raise BadInput(f"invalid regular expression in --where {text!r}: {exc}") from None
    return Filter(field, op, value)


# -- the index ---------------------------------------------------------------------------


def _compiled_filters(filters: list[Filter]) -> list[tuple[str, str, re.Pattern[str] | str]]:
    return [(f.field, f.op, re.compile(f.value) if f.op == "~" else f.value) for f in filters]


class Matcher(Generic[S]):
    """Subscriptions indexed by pattern shape, so the cost per event does not grow with
    the number of subscriptions that cannot match it:

    - exact types (``VM.START``) in a dict;
    - prefixes (``VM.*``, ``VM*``) in a dict probed with each prefix of the event type;
    - suffixes (``*.CREATE``) likewise with each suffix;
    - catch-alls (``*``) in a list;
    - anything else (``V?.*``, ``*.SNAPSHOT.*``) as regular expressions, scanned.

    ``S`` is anything with ``patterns``, ``level``, ``filters`` and ``enabled`` (and
    ``categories``, ``states``, ``format`` if it has them).
    """

    def __init__(self, subscriptions: list[S]) -> None:
        self.exact: dict[str, list[int]] = {}
        self.prefix: dict[str, list[int]] = {}
        self.suffix: dict[str, list[int]] = {}
        self.catch_all: list[int] = []
        self.globs: list[tuple[re.Pattern[str], int]] = []
        self.subscriptions = [s for s in subscriptions if s.enabled]
        self.rank = [LEVEL_RANK[s.level] for s in self.subscriptions]
        self.filters = [_compiled_filters(s.filters) for s in self.subscriptions]
        self.scopes = [Scope.of(s) for s in self.subscriptions]
        for i, sub in enumerate(self.subscriptions):
            for pattern in {p.upper() for p in sub.patterns}:
                self._add(pattern, i)
        self.prefix_lengths = sorted({len(p) for p in self.prefix})
        self.suffix_lengths = sorted({len(p) for p in self.suffix})

    def _add(self, pattern: str, i: int) -> None:
        wild = [c for c in pattern if c in "*?"]
        if not wild:
            self.exact.setdefault(pattern, []).append(i)
        elif pattern == "*" or set(pattern) == {"*"}:
            self.catch_all.append(i)
        elif wild == ["*"] and pattern.endswith("*"):
            self.prefix.setdefault(pattern[:-1], []).append(i)
        elif wild == ["*"] and pattern.startswith("*"):
            self.suffix.setdefault(pattern[1:], []).append(i)
        else:
            self.globs.append((re.compile(fnmatch.translate(pattern)), i))

    def candidates(self, event_type: str) -> list[int]:
        kind = event_type.upper()
        found: list[int] = list(self.catch_all)
        found += self.exact.get(kind, ())
        size = len(kind)
        for n in self.prefix_lengths:
            if n > size:
                break
            found += self.prefix.get(kind[:n], ())
        for n in self.suffix_lengths:
            if n > size:
                break
            found += self.suffix.get(kind[size - n :], ())
        found += [i for rx, i in self.globs if rx.match(kind)]
        return sorted(set(found)) if len(found) > 1 else found

    def match(self, event: Any) -> list[S]:
        """Subscriptions the event reaches, in the order given (the store gives name order)."""
        rank = LEVEL_RANK.get(event.level, 0)
        out = []
        for i in self.candidates(event.type):
            if (
                rank >= self.rank[i]
                and self.scopes[i].reason(event) is None
                and self._filters_pass(i, event)
            ):
                out.append(self.subscriptions[i])
        return out

    def _filters_pass(self, i: int, event: Any) -> bool:
        for field_name, op, want in self.filters[i]:
            value = getattr(event, field_name, None)
            text = "" if value is None else str(value)
            if op == "=":
                if text != want:
                    return False
            elif not want.search(text):  # type: ignore[union-attr]
                return False
        return True


# -- explaining ----------------------------------------------------------------------------


@dataclass
class Verdict:
    """Whether one subscription takes an event, and why (or why not)."""

    subscription: str
    matched: bool
    reason: str
    pattern: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"subscription": self.subscription, "matched": self.matched,
                "pattern": self.pattern, "reason": self.reason}  # fmt: skip


def explain(subscription: Any, event: Any) -> Verdict:
    """The same decision as ``Matcher.match``, spelled out for people."""
    name = subscription.name
    if not subscription.enabled:
        return Verdict(name, False, "the subscription is disabled")
    kind = event.type.upper()
    pattern = next((p for p in subscription.patterns if fnmatch.fnmatchcase(kind, p.upper())), None)
    if pattern is None:
        return Verdict(
            name, False, f"no pattern matches {event.type} ({', '.join(subscription.patterns)})"
        )
    if LEVEL_RANK.get(event.level, 0) < LEVEL_RANK[subscription.level]:
        return Verdict(
            name, False, f"level {event.level} is below its minimum {subscription.level}", pattern
        )
    out_of_scope = Scope.of(subscription).reason(event)
    if out_of_scope is not None:
        return Verdict(name, False, out_of_scope, pattern)
    for f in subscription.filters:
        value = getattr(event, f.field, None)
        text = "" if value is None else str(value)
        ok = text == f.value if f.op == "=" else bool(f.regex.search(text))
        if not ok:
            return Verdict(name, False, f"filter {f} failed ({f.field} is {text!r})", pattern)
    extra = (
        f", filters {' and '.join(str(f) for f in subscription.filters)} passed"
        if subscription.filters
        else ""
    )
    return Verdict(name, True, f"pattern {pattern} matches {event.type}{extra}", pattern)
