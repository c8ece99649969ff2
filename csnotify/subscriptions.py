"""Subscriptions: what they hold, how they are checked, and the operations on them.

Every operation validates all its input before it opens a write transaction, so bad
input leaves the store exactly as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from csnotify import matching
from csnotify.channels import command_argv, validate_endpoint
from csnotify.errors import BadInput, NameTaken, NotFound, did_you_mean
from csnotify.models import COMMAND, WEBHOOK, Endpoint, Subscription, endpoint_kind, warnings
from csnotify.redact import mask_uri

if TYPE_CHECKING:
    from csnotify.policy import Policy
    from csnotify.store import Store

# A subscription's caller may see (the API's scope); None: every subscription.
Within = Callable[[Subscription], bool]

FORMATS = ("json", "cloudevents", "cloudstack")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def suggest(name: str, names: Sequence[str]) -> str:
    return did_you_mean(name, names, cutoff=0.5) or "; see 'csnotify list'"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise BadInput(
            f"invalid name {name!r}: 1-64 letters, digits, '_', '-' or '.', starting with a"
            " letter or digit"
        )
    return name


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def default_name(patterns: Sequence[str], uris: Sequence[str], taken: set[str]) -> str:
    """A readable name from the first pattern and where it goes: ``vm-to-hooks-example``."""
    what = _slug(patterns[0].replace("*", "all")) or "all"
    target = uris[0]
    kind = endpoint_kind(target)
    if kind == WEBHOOK:
        where = urlsplit(target).hostname or "webhook"
        where = re.sub(r"^www\.", "", where).rsplit(".", 1)[0] if "." in where else where
    elif kind == COMMAND:
        where = command_argv(target)[0].rsplit("/", 1)[-1]
    else:
        where = target.split(":", 1)[0]
    base = f"{what}-to-{_slug(where) or 'endpoint'}"[:56].strip("-")
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


@dataclass
class SubscriptionInput:
    """What a user may give to ``subscribe`` and ``update``; None means 'not given'."""

    patterns: list[str] | None = None
    to: list[str] | None = None
    name: str | None = None
    key: str | None = None  # a secret, or "generate"
    level: str | None = None
    where: list[str] | None = None
    format: str | None = None
    title: str | None = None
    body: str | None = None
    max_per_minute: str | None = None  # a number, or "default"
    group_wait: str | None = None  # a duration such as 30s; 0 switches grouping off
    strict_order: bool | None = None  # per endpoint: total order instead of per resource
    categories: list[str] | None = None  # CloudStack's categories; [] = the default
    states: list[str] | None = None  # CloudStack's states (phases); [] = the default


MAX_GROUP_WAIT_S = 3600.0
MAX_RATE = 100_000


def parse_rate(text: str) -> int | None:
    """``--max-per-minute``: a whole number (0: no limit), or ``default`` (None)."""
    value = text.strip().lower()
    if value == "default":
        return None
    if not value.isdigit() or len(value) > 6 or int(value) > MAX_RATE:
        raise BadInput(
            f"--max-per-minute {text!r}: use a whole number from 0 (no limit) to {MAX_RATE},"
            " or 'default'"
        )
    return int(value)


def parse_group_wait(text: str) -> float:
    from csnotify.events import parse_duration

    seconds = parse_duration(text, "--group-wait").total_seconds()
    if seconds > MAX_GROUP_WAIT_S:
        raise BadInput(f"--group-wait {text!r} is longer than 1h; use at most 1h")
    return seconds


def _checked_uris(uris: Sequence[str], policy: Policy | None = None) -> list[str]:
    seen: list[str] = []
    for uri in uris:
        if policy is not None:
            policy.scheme(uri)
        checked = validate_endpoint(uri)
        if policy is not None:
            policy.address(checked)
        if checked in seen:
            raise BadInput(f"--to {mask_uri(checked)!r} is given twice")
        seen.append(checked)
    return seen


def _checked_format(fmt: str) -> str:
    value = fmt.strip().lower()
    if value not in FORMATS:
        raise BadInput(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return value


def _resolve_key(key: str) -> tuple[str, bool]:
    """Returns (secret, generated)."""
    from csnotify.signing import generate_key, validate_key

    if key == "generate":
        return generate_key(), True
    return validate_key(key), False


def build(spec: SubscriptionInput, taken: set[str]) -> tuple[Subscription, bool]:
    """A new subscription from user input, fully validated. Returns it and whether the
    key was generated (so the caller shows it once)."""
    if not spec.patterns:
        raise BadInput("no event-type pattern; give at least one, e.g. 'VM.*'")
    if not spec.to:
        raise BadInput("no endpoint; give at least one --to URI")
    patterns = [matching.parse_pattern(p) for p in spec.patterns]
    uris = _checked_uris(spec.to)
    sub = Subscription(name="", patterns=patterns, endpoints=[Endpoint(u) for u in uris])
    sub, generated = apply(sub, replace(spec, patterns=None, to=None, name=None))
    if spec.name is not None:
        sub.name = check_name(spec.name)
        if sub.name in taken:
            raise NameTaken(
                f"a subscription named {sub.name!r} exists; choose another --name or use"
                f" 'csnotify update {sub.name}'"
            )
    else:
        sub.name = default_name(patterns, uris, taken)
    return sub, generated


def apply(sub: Subscription, spec: SubscriptionInput) -> tuple[Subscription, bool]:
    """``sub`` with the given fields of ``spec`` changed and validated; counters of
    endpoints that stay are kept."""
    from csnotify import templates

    new = replace(sub, endpoints=list(sub.endpoints), filters=list(sub.filters))
    generated = False
    if spec.patterns is not None:
        if not spec.patterns:
            raise BadInput("no event-type pattern; give at least one, e.g. 'VM.*'")
        new.patterns = [matching.parse_pattern(p) for p in spec.patterns]
    if spec.to is not None:
        if not spec.to:
            raise BadInput("no endpoint; give at least one --to URI")
        old = {ep.uri: ep for ep in sub.endpoints}
        new.endpoints = [old.get(u, Endpoint(u)) for u in _checked_uris(spec.to)]
    if spec.level is not None:
        new.level = matching.parse_level(spec.level)
    if spec.where is not None:
        new.filters = [matching.parse_filter(w) for w in spec.where]
    if spec.categories is not None:
        new.categories = list(dict.fromkeys(matching.parse_category(c) for c in spec.categories))
    if spec.states is not None:
        new.states = list(dict.fromkeys(matching.parse_state(c) for c in spec.states))
    if spec.format is not None:
        new.format = _checked_format(spec.format)
    if spec.title is not None:
        new.title = templates.validate(spec.title, "--title") or None
    if spec.body is not None:
        new.body = templates.validate(spec.body, "--body") or None
    if spec.key is not None:
        new.key, generated = _resolve_key(spec.key)
    if spec.group_wait is not None:
        new.group_wait = parse_group_wait(spec.group_wait)
    if spec.max_per_minute is not None:
        rate = parse_rate(spec.max_per_minute)
        new.endpoints = [replace(ep, max_per_minute=rate) for ep in new.endpoints]
    if spec.strict_order is not None:
        new.endpoints = [replace(ep, strict_order=spec.strict_order) for ep in new.endpoints]
    if spec.name is not None and spec.name != sub.name:
        new.name = check_name(spec.name)
    return new, generated


def notes(sub: Subscription, api_keys: bool) -> list[str]:
    """What an operator should know about a subscription as written (not errors)."""
    from csnotify.names import uses_names

    said = []
    if (note := group_wait_note(sub)) is not None:
        said.append(note)
    if sub.format == "cloudstack" and sub.categories != ["ActionEvent"]:
        said.append(
            f"{sub.name} uses --format cloudstack: only ActionEvents are sent to it, as"
            " CloudStack's own webhooks send them; alerts and other categories are not"
        )
    if not api_keys and uses_names(sub):
        said.append(
            f"{sub.name} filters on names: bus events (--source amqp) carry UUIDs, so these"
            " filters match them only with API keys to resolve names (cloudstack.api_key,"
            " cloudstack.secret_key); or filter on account_id, domain_id, user_id"
        )
    return said


def group_wait_note(sub: Subscription) -> str | None:
    from csnotify.models import APPRISE

    if sub.group_wait and not any(ep.kind == APPRISE for ep in sub.endpoints):
        return (
            f"--group-wait applies to email, SMS and chat endpoints; {sub.name} has none,"
            " so its events are sent one by one"
        )
    return None


def find(store: Store, name: str, within: Within | None = None) -> Subscription:
    """The subscription named so; with ``within``, one outside it is not found either (and
    the suggestions name only those inside)."""
    sub = store.subscription(name)
    if sub is None or (within is not None and not within(sub)):
        names = store.names() if within is None else [s.name for s in visible(store, within)]
        raise NotFound(f"no subscription named {name!r}{suggest(name, names)}")
    return sub


def visible(store: Store, within: Within | None) -> list[Subscription]:
    subs = store.subscriptions()
    return subs if within is None else [s for s in subs if within(s)]


@dataclass
class Created:
    subscription: Subscription
    generated_key: str | None  # shown once

    def as_json(self) -> dict[str, Any]:
        data = self.subscription.as_json()
        if self.generated_key:
            data["generated_key"] = self.generated_key
        return data


@dataclass
class Updated(Created):
    discarded: int = 0  # pending deliveries of removed endpoints, given up


def subscribe(
    store: Store,
    spec: SubscriptionInput,
    enabled: bool = True,
    owner: tuple[str, str, str] | None = None,
    policy: Policy | None = None,
) -> Created:
    """``owner`` (scope, account, domain): who it belongs to when made through the API;
    ``policy`` refuses endpoints such a caller may not use, and more subscriptions or
    endpoints than an owner may have (csnotify/policy.py)."""
    if policy is not None:
        _checked_uris(spec.to or [], policy)
    sub, generated = build(spec, set(store.names()))
    sub.enabled = enabled
    if owner is not None:
        sub.owner_scope, sub.owner_account, sub.owner_domain = owner
    with store.transaction():
        if store.subscription(sub.name) is not None:  # created by another process meanwhile
            raise NameTaken(f"a subscription named {sub.name!r} exists; choose another --name")
        if policy is not None:
            owned = [s for s in store.subscriptions() if s.owner == sub.owner]
            policy.count(len(sub.endpoints), len(owned) + 1)
        store.insert(sub)
    saved = find(store, sub.name)
    return Created(saved, sub.key if generated else None)


def update(
    store: Store,
    name: str,
    spec: SubscriptionInput,
    add_to: Sequence[str] = (),
    remove_to: Sequence[str] = (),
    no_key: bool = False,
    rotate_key: bool = False,
    limit_endpoint: str | None = None,
    policy: Policy | None = None,
    within: Within | None = None,
) -> Updated:
    """Read, change and write the subscription in one write transaction, so that a
    concurrent update, rename or unsubscribe is either wholly before or wholly after."""
    if rotate_key and (spec.key is not None or no_key):
        raise BadInput("--rotate-key cannot be combined with --key or --no-key")
    if no_key and spec.key is not None:
        raise BadInput("--no-key cannot be combined with --key")
    if (add_to or remove_to) and spec.to is not None:
        raise BadInput("--to replaces all endpoints; do not combine it with --add-to/--remove-to")
    if limit_endpoint is not None and spec.max_per_minute is None and spec.strict_order is None:
        raise BadInput(
            "--endpoint goes with --max-per-minute or --strict-order (it says which endpoint)"
        )
    _checked_uris([*add_to, *(spec.to or [])], policy)  # the slow checks before the write lock
    with store.transaction():
        current = find(store, name, within)
        new, generated = _changed(current, spec, add_to, remove_to, no_key, rotate_key,
                                  limit_endpoint)  # fmt: skip
        if policy is not None:
            policy.count(len(new.endpoints), 0)
        if new.name != current.name and store.subscription(new.name) is not None:
            raise NameTaken(f"a subscription named {new.name!r} exists; choose another name")
        discarded = store.save(current.name, new)
        saved = find(store, new.name)
    return Updated(saved, new.key if generated else None, discarded)


def _changed(
    current: Subscription,
    spec: SubscriptionInput,
    add_to: Sequence[str],
    remove_to: Sequence[str],
    no_key: bool,
    rotate_key: bool,
    limit_endpoint: str | None,
) -> tuple[Subscription, bool]:
    only = current.endpoint(limit_endpoint).uri if limit_endpoint is not None else None
    if add_to or remove_to:
        uris = [ep.uri for ep in current.endpoints]
        for uri in remove_to:
            uris.remove(current.endpoint(uri).uri)
        uris += list(add_to)
        spec = replace(spec, to=uris)
    if rotate_key:
        spec = replace(spec, key="generate")
    new, generated = apply(current, spec)
    if only is not None:  # the new values for that endpoint only; the others keep theirs
        before = {ep.uri: ep for ep in current.endpoints}
        for ep in new.endpoints:
            if ep.uri != only and ep.uri in before:
                ep.max_per_minute = before[ep.uri].max_per_minute
                ep.strict_order = before[ep.uri].strict_order
    if no_key:
        new.key = None
    return new, generated


def unsubscribe(
    store: Store, name: str, expected_id: int | None = None, within: Within | None = None
) -> Subscription:
    """Delete it; with ``expected_id``, only if the name still means the subscription the
    caller looked at (asked about) before."""
    with store.transaction():
        sub = find(store, name, within)
        if expected_id is not None and sub.id != expected_id:
            raise NotFound(
                f"subscription {name!r} was replaced by another process meanwhile; nothing"
                " deleted, see 'csnotify show'"
            )
        store.delete(sub.name)
    return sub


def set_enabled(
    store: Store,
    name: str,
    enabled: bool,
    endpoint: str | None = None,
    within: Within | None = None,
) -> Subscription:
    """Switch a subscription (or one of its endpoints) on or off. Switching an endpoint on
    resets its failure counters; switching a whole subscription on resets all of them."""
    with store.transaction():
        sub = find(store, name, within)
        targets = [sub.endpoint(endpoint)] if endpoint is not None else []
        if endpoint is None:
            store.set_subscription_enabled(sub.name, enabled)
            if enabled:
                for ep in sub.endpoints:
                    store.set_endpoint_enabled(ep, True, reset=True)
        for ep in targets:
            store.set_endpoint_enabled(
                ep, enabled, reset=enabled, reason=None if enabled else "disabled by operator"
            )
        return find(store, sub.name)


def owner_text(sub: Subscription) -> str:
    """Who a subscription belongs to, for people: an account (domain/account), a domain,
    global (made by a global API caller), or '-' (made at a shell)."""
    if sub.owner_scope == "account":
        return f"account {sub.owner_domain}/{sub.owner_account}"
    if sub.owner_scope == "domain":
        return f"domain {sub.owner_domain}"
    return sub.owner_scope or "-"


def summary(sub: Subscription) -> dict[str, Any]:
    """One row of ``list``: what an operator scans for."""
    failing = [ep for ep in sub.endpoints if ep.consecutive_failures]
    last_success = max((ep.last_success_at or "" for ep in sub.endpoints), default="")
    last_error = max((ep.last_error_at or "" for ep in sub.endpoints), default="")
    return {
        "name": sub.name,
        "patterns": " ".join(sub.patterns),
        "level": sub.level,
        "endpoints": f"{sum(ep.enabled for ep in sub.endpoints)}/{len(sub.endpoints)}",
        "state": "enabled" if sub.enabled else "disabled",
        "failing": len(failing),
        "last_success": last_success or "-",
        "last_error": last_error or "-",
        "owner": owner_text(sub),
        "warnings": [w for ep in sub.endpoints for w in warnings(ep.uri)],
    }
