"""The domain types every stage and the store share: subscriptions, their endpoints, and
mutes. Plain data with the few methods that only look at their own fields.

This module imports only leaf modules of ours (errors, redact), so the store and every
stage can import it without a circle; an endpoint's kind is decided here from its URI
scheme, and the channels import it from here.
"""

from __future__ import annotations

import fnmatch
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any

from csnotify.errors import NotFound
from csnotify.redact import mask_key, mask_uri

if TYPE_CHECKING:
    from csnotify.matching import Filter


class Status(StrEnum):
    """What became of one delivery (the ``status`` of a delivery log row). A str: it is
    written, compared and shown as its value."""

    DELIVERED = "delivered"
    FAILED = "failed"
    MUTED = "muted"  # a mute covered it: not sent, not a failure
    FOLDED = "folded"  # held back by a rate limit or a group: sent inside a digest
    DROPPED = "dropped"  # never sent: the backlog was full, or it waited too long


SENT = (Status.DELIVERED, Status.FAILED)  # outcomes of messages that went out
HELD = (Status.MUTED, Status.FOLDED, Status.DROPPED)  # sent nothing, and not failures

WEBHOOK = "webhook"
COMMAND = "command"
APPRISE = "apprise"


def endpoint_kind(uri: str) -> str:
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return WEBHOOK
    if scheme == "cmd":
        return COMMAND
    return APPRISE


# Query options by which an URI turns TLS certificate checks off (Apprise's verify=no,
# and the spellings other tools use), with the values that mean "off" for each.
_OFF = ("no", "false", "0", "off", "n")
_ON = ("1", "yes", "true", "on", "y")
_TLS_OFF = {"verify": _OFF, "verify_ssl": _OFF, "no_verify_ssl": _ON, "insecure": _ON}


def warnings(uri: str) -> list[str]:
    """What an operator should know about an endpoint URI: a TLS check turned off (the
    messages, and any password in the URI, go to whoever answers)."""
    from urllib.parse import parse_qsl, urlsplit

    try:
        query = parse_qsl(urlsplit(uri).query, keep_blank_values=True)
    except ValueError:
        return []
    for name, value in query:
        if name.lower() == "verify" and endpoint_kind(uri) == APPRISE:
            off = not _apprise_true(value)
        else:
            off = value.strip().lower() in _TLS_OFF.get(name.lower(), ())
        if off:
            return [f"TLS not verified ({name}={value})"]
    return []


# apprise/utils/parse.py (parse_bool), as apprise/url.py reads ?verify=: a value starting
# with one of these is false, then one of these true, and anything else (verify=never,
# verify=disabled, verify=please, an empty verify=) is false too.
_APPRISE_FALSE = ("de", "di", "ne", "f", "n", "no", "of", "0", "fa")
_APPRISE_TRUE = ("en", "al", "t", "y", "ye", "on", "1", "tr")


def _apprise_true(value: str) -> bool:
    start = value.lower()[0:2]
    return start not in _APPRISE_FALSE and start in _APPRISE_TRUE


@dataclass
class Endpoint:
    uri: str
    enabled: bool = True
    consecutive_failures: int = 0
    total_failures: int = 0
    total_successes: int = 0
    last_error: str | None = None
    last_error_at: str | None = None
    last_success_at: str | None = None
    disabled_reason: str | None = None
    max_per_minute: int | None = None  # None: the default for its kind (see limit())
    total_muted: int = 0
    total_folded: int = 0
    strict_order: bool = False  # one delivery at a time, in acceptance order
    total_dropped: int = 0  # given up because the backlog was full
    id: int | None = None

    @property
    def kind(self) -> str:
        return endpoint_kind(self.uri)

    def limit(self, human_default: int) -> int:
        """Messages allowed per minute; 0 means no limit. Human channels (Apprise) default
        to ``human_default`` (delivery.human_max_per_minute); webhooks and commands to none."""
        if self.max_per_minute is not None:
            return self.max_per_minute
        return human_default if self.kind == APPRISE else 0

    def as_json(self, reveal: bool = False) -> dict[str, Any]:
        return {
            "uri": self.uri if reveal else mask_uri(self.uri),
            "kind": self.kind,
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "consecutive_failures": self.consecutive_failures,
            "total_failures": self.total_failures,
            "total_successes": self.total_successes,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_success_at": self.last_success_at,
            "max_per_minute": self.max_per_minute,
            "total_muted": self.total_muted,
            "total_folded": self.total_folded,
            "strict_order": self.strict_order,
            "total_dropped": self.total_dropped,
            "warnings": warnings(self.uri),
        }


@dataclass
class Subscription:
    name: str
    patterns: list[str]
    endpoints: list[Endpoint]
    level: str = "INFO"
    filters: list[Filter] = field(default_factory=list)
    format: str = "json"
    key: str | None = None
    title: str | None = None
    body: str | None = None
    enabled: bool = True
    group_wait: float = 0.0  # seconds; human channels collect events this long, send one
    # Which events of a matching type: CloudStack categories and states (phases). Both
    # empty: each operation's outcome and alerts (see matching.scope_reason).
    categories: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    created: str | None = None
    updated: str | None = None
    id: int | None = None
    # Who it belongs to (issue 16): made through the API by an account, a domain admin or a
    # global caller; all None when made at a shell (an operator's).
    owner_scope: str | None = None  # account | domain | global
    owner_account: str | None = None
    owner_domain: str | None = None  # CloudStack domain path, e.g. ROOT/sales

    @property
    def owner(self) -> dict[str, str | None] | None:
        if self.owner_scope is None:
            return None
        return {
            "scope": self.owner_scope,
            "account": self.owner_account,
            "domain": self.owner_domain,
        }

    def endpoint(self, uri: str) -> Endpoint:
        for ep in self.endpoints:
            if ep.uri == uri:
                return ep
        for ep in self.endpoints:  # the user may type the masked form shown by list
            if mask_uri(ep.uri) == uri:
                return ep
        have = ", ".join(mask_uri(ep.uri) for ep in self.endpoints)
        raise NotFound(f"subscription {self.name!r} has no endpoint {mask_uri(uri)!r} ({have})")

    def as_json(self, reveal: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "enabled": self.enabled,
            "patterns": list(self.patterns),
            "level": self.level,
            "where": [str(f) for f in self.filters],
            "format": self.format,
            "key": self.key if reveal else mask_key(self.key),
            "title": self.title,
            "body": self.body,
            "group_wait": self.group_wait,
            "categories": list(self.categories),
            "states": list(self.states),
            "created": self.created,
            "updated": self.updated,
            "owner": self.owner,
            "endpoints": [ep.as_json(reveal) for ep in self.endpoints],
        }
        if reveal and self.key:
            from csnotify.signing import whsec_form

            out["key_whsec"] = whsec_form(self.key)
        return out


@dataclass
class Mute:
    subscription: str | None  # None: every subscription
    endpoint: str | None  # None: every endpoint
    pattern: str | None  # None: every event type
    reason: str
    created: str
    until: str  # UTC ISO 8601
    id: int | None = None

    @cached_property
    def ends(self) -> float:
        return datetime.fromisoformat(self.until).timestamp()

    @cached_property
    def _types(self) -> re.Pattern[str] | None:
        return re.compile(fnmatch.translate(self.pattern), re.IGNORECASE) if self.pattern else None

    def covers(self, subscription: str, uri: str, event_type: str, now: float) -> bool:
        return (
            now < self.ends
            and (self.subscription is None or self.subscription == subscription)
            and (self.endpoint is None or self.endpoint == uri)
            and (self._types is None or self._types.match(event_type) is not None)
        )

    def as_json(self, now: float | None = None) -> dict[str, Any]:
        left = max(0.0, self.ends - (time.time() if now is None else now))
        return {
            "id": self.id,
            "subscription": self.subscription,
            "endpoint": mask_uri(self.endpoint) if self.endpoint else None,
            "pattern": self.pattern,
            "reason": self.reason,
            "created": self.created,
            "until": self.until,
            "seconds_left": round(left),
        }
