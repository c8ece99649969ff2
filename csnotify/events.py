"""The normalised event, and one parser for every shape CloudStack (or we) produce.

Accepted shapes (``normalise``):
- a listEvents item (``{"id", "type", "level", "created": "2024-05-14T10:22:31+0000", ...}``);
- a ``listeventsresponse`` document (all its items), or its inner object
  ``{"count": N, "event": [...]}`` as ``cmk -o json list events`` and the ``cs`` client
  print it;
- an event-bus message body of any of the five categories, with its routing key
  (``management-server.ActionEvent.VM-START.VirtualMachine.<uuid>``) or without one
  (the category is then told from the body's keys);
- a captured bus message ``{"routing_key": ..., "body": {...}}`` (as in shared/fixtures);
- our own normalised JSON, or our webhook body ``{"event": {...}, "subscription": ...}``;
- a CloudEvents 1.0 structured JSON event.

Times become UTC ISO 8601 (``2024-05-14T10:22:31Z``); the original stays under ``raw``.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from csnotify.clock import now_iso, utc_iso
from csnotify.errors import BadInput
from csnotify.fields import CATEGORIES, EVENT_FIELDS, is_outcome  # noqa: F401 - re-exported
from csnotify.matching import parse_level

CLOUDEVENTS_PREFIX = "org.apache.cloudstack."
# Namespace for ids of bus messages, which carry none: the same message gives the same id.
BUS_ID_NAMESPACE = uuid.UUID("6f1c1f0e-6a55-4b9e-9a57-3b0f7e0c5a11")
MAX_TEXT = 64 * 1024

FIELDS = EVENT_FIELDS


@dataclass
class Event:
    id: str
    type: str
    level: str = "INFO"
    state: str | None = None
    category: str = "ActionEvent"
    created: str = ""
    account: str | None = None
    domain: str | None = None
    username: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    resource_name: str | None = None
    description: str | None = None
    source: str = "stdin"
    account_id: str | None = None
    domain_id: str | None = None
    user_id: str | None = None
    project: str | None = None
    project_id: str | None = None
    subject: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    # The bus body exactly as received, for byte-compatible --format cloudstack.
    raw_text: str | None = field(default=None, repr=False, compare=False)
    _json: str | None = field(default=None, repr=False, compare=False)
    # A bus message's content id (routing key and body); ``id`` may add its occurrence.
    digest: str | None = field(default=None, repr=False, compare=False)
    # The domain's path (ROOT/customers/eu) as listDomains gives it, for bus events whose
    # domain the API named (csnotify/names.py); owners' scope compares it. Not written out.
    domain_path: str | None = field(default=None, repr=False, compare=False)

    def as_json(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in FIELDS}
        out["raw"] = self.raw
        return out

    def json_text(self) -> str:
        """``as_json()`` serialised once, however many endpoints the event goes to."""
        if self._json is None:
            self._json = json.dumps(
                self.as_json(), separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
        return self._json

    def fields(self) -> dict[str, Any]:
        """Template and filter values: the flat fields, no ``raw``."""
        return {name: getattr(self, name) for name in FIELDS}

    def changed(self) -> None:
        """Fields were set after parsing (names resolved): serialise again."""
        self._json = None


def describe(event: Event) -> str:
    """One line for people: what happened to what, whose (``match``, ``listen --dry-run``)."""
    what = event.resource_name or event.resource_id
    owner = "/".join(p for p in (event.domain, event.account or event.account_id) if p)
    parts = [event.level, event.category, event.type, event.state, what]
    text = " ".join(p for p in parts if p)
    return f"{text} (account {owner})" if owner else text


# -- time ------------------------------------------------------------------------------

_TIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%z",  # listEvents: 2024-05-14T10:22:31+0000
    "%Y-%m-%d %H:%M:%S %z",  # event bus: 2024-05-14 10:22:31 +0000
    "%Y-%m-%dT%H:%M:%S.%f%z",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M%z",  # typed by people: 2026-11-26T06:00Z
    "%Y-%m-%d %H:%M%z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",  # a date only: its start, in UTC
)


# The two shapes CloudStack writes (bus eventDateTime, listEvents created), read without
# strptime, which costs about 10 us a try (the bus source reads one per message).
_CLOUDSTACK_TIME = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d ?[+-]\d{4}$")


def parse_time(text: str) -> datetime:
    value = text.strip()
    if _CLOUDSTACK_TIME.match(value):
        with contextlib.suppress(ValueError):  # e.g. month 13: refused below, in words
            return datetime.fromisoformat(value[:19] + value[-5:])
    if value.endswith("Z"):
        value = value[:-1] + "+0000"
    for fmt in _TIME_FORMATS:
        try:
            moment = datetime.strptime(value, fmt)  # noqa: DTZ007 - naive ones are taken as UTC
        except ValueError:
            continue
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    raise BadInput(
        f"unrecognised time {text!r}; use e.g. 2024-05-14T10:22:31Z, 2024-05-14T10:22Z"
        " or 2024-05-14"
    )


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_S = 3650 * 86400  # ten years: dates stay in range whichever way they go


def parse_duration(text: str, what: str) -> timedelta:
    """``90``, ``90s``, ``30m``, ``2h``, ``1d``."""
    match = _DURATION.match(text.strip().lower())
    if not match or len(text) > 20:
        raise BadInput(f"{what} {text!r}: use a duration such as 90s, 30m, 2h or 1d")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_DURATION_S:
        raise BadInput(f"{what} {text!r}: at most {MAX_DURATION_S // 86400:.0f}d")
    return timedelta(seconds=seconds)


def parse_schedule(text: str, what: str) -> list[float]:
    """``0s,5s,30s,2m``: the wait before each attempt, in seconds (at least one step)."""
    steps = text.split(",")
    if not text.strip() or len(steps) > 50:
        raise BadInput(f"{what} {text!r}: give 1 to 50 waits such as 0s,5s,30s,2m,10m,1h")
    return [parse_duration(step, what).total_seconds() for step in steps]


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2026-11-25T10:00:00Z``, ``2026-11-25 10:00:00`` or relative: ``30m``, ``2h``, ``1d``
    ago."""
    if _DURATION.match(text.strip().lower()) and text.strip()[-1:].isalpha():
        return (now or datetime.now(UTC)) - parse_duration(text, "time")
    return parse_time(text)


_UTC_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def normalise_time(text: Any) -> str:
    if not isinstance(text, str) or not text:
        return now_iso()
    if _UTC_ISO.match(text):  # already normalised (dispatch, redeliver, the outbox)
        with contextlib.suppress(ValueError):  # e.g. month 13: refused below, in words
            datetime.fromisoformat(text[:19])
            return text
    return utc_iso(parse_time(text))


# -- helpers ---------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return None
    text = str(value)
    return text[:MAX_TEXT]


def _require_type(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{what} has no event type")
    if len(value) > 200:
        raise BadInput(f"{what} has an event type longer than 200 characters")
    return value.strip()


def _level(value: Any) -> str:
    """CloudStack's level as ours (WARNING is WARN); one we do not know is INFO."""
    try:
        return parse_level(str(value or "INFO"))
    except BadInput:
        return "INFO"


# -- listEvents ------------------------------------------------------------------------


def from_list_item(item: dict[str, Any], source: str = "api", checked: bool = False) -> Event:
    if not isinstance(item.get("id"), str):
        raise BadInput("listEvents item has no id")
    if not checked:
        refuse_lone_surrogates(item)
    return Event(
        id=item["id"],
        type=_require_type(item.get("type"), "listEvents item"),
        level=_level(item.get("level")),
        state=_text(item.get("state")),
        category="ActionEvent",
        created=normalise_time(item.get("created")),
        account=_text(item.get("account")),
        domain=_text(item.get("domain")),
        username=_text(item.get("username")),
        resource_type=_text(item.get("resourcetype")),
        resource_id=_text(item.get("resourceid")),
        resource_name=_text(item.get("resourcename")),
        description=_text(item.get("description")),
        source=source,
        domain_id=_text(item.get("domainid")),
        project=_text(item.get("project")),
        project_id=_text(item.get("projectid")),
        raw=item,
    )


def is_list_inner(doc: dict[str, Any]) -> bool:
    """``{"count": N, "event": [...]}``: listEvents' answer without its wrapper, as cmk
    (cloudmonkey cmd/network.go getResponseData keeps the inner object) and ``cs`` return
    it."""
    keys = set(doc) - {"count"}
    return isinstance(doc.get("count"), int) and (
        not keys or (keys == {"event"} and isinstance(doc["event"], list))
    )


def list_response_items(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if is_list_inner(doc):
        return list(doc.get("event", []))
    inner = doc.get("listeventsresponse")
    if not isinstance(inner, dict):
        raise BadInput("not a listeventsresponse document")
    if "errorcode" in inner:
        raise BadInput(f"listEvents error {inner.get('errorcode')}: {inner.get('errortext')}")
    items = inner.get("event", [])
    if not isinstance(items, list):
        raise BadInput("listeventsresponse.event is not a list")
    return items


# -- event bus -------------------------------------------------------------------------


@dataclass(frozen=True)
class RoutingKey:
    source: str
    category: str
    type: str
    resource_type: str | None
    resource_id: str | None

    @classmethod
    def parse(cls, key: str) -> RoutingKey:
        parts = key.split(".")
        if len(parts) != 5 or parts[1] not in CATEGORIES:
            raise BadInput(
                f"malformed routing key {key[:200]!r}: expected"
                " source.category.type.resourceType.resourceUuid with a CloudStack category"
            )

        def part(p: str) -> str | None:
            return None if p in ("", "*") else p

        return cls(parts[0], parts[1], parts[2], part(parts[3]), part(parts[4]))


def bus_like(body: dict[str, Any]) -> bool:
    """Keys only CloudStack's bus bodies have (see ``guess_category``)."""
    try:
        guess_category(body)
    except BadInput:
        return False
    return True


def guess_category(body: dict[str, Any]) -> str:
    if "old-state" in body or "new-state" in body:
        return "ResourceStateEvent"
    if "jobId" in body or "commandEventType" in body:
        return "AsyncJobEvent"
    if "subject" in body or "dataCenterId" in body:
        return "AlertEvent"
    if "entityuuid" in body or "entity" in body or "status" in body:
        return "ActionEvent"
    if "zone" in body or "resource" in body:
        return "UsageEvent"
    raise BadInput("not a CloudStack event-bus message (no known keys); give --routing-key")


# UsageEvent bodies name the resource by its Java class (UsageEventUtils): the entity it is.
USAGE_CLASSES = {
    "com.cloud.vm.UserVmVO": "VirtualMachine",
    "com.cloud.vm.VMInstanceVO": "VirtualMachine",
    "com.cloud.storage.VolumeVO": "Volume",
    "com.cloud.storage.SnapshotVO": "Snapshot",
    "com.cloud.network.dao.NetworkVO": "Network",
    "com.cloud.network.dao.IPAddressVO": "IpAddress",
    "com.cloud.storage.VMTemplateVO": "Template",
    "com.cloud.network.VpnUserVO": "VpnUser",
    "com.cloud.vm.NicVO": "Nic",
}
# ActionEventUtils prefixes the description of a failed operation's Completed event.
FAILED_PREFIX = "Error while"


def bus_digest(routing_key: str | None, raw_text: str) -> str:
    """The id of a message's content: the same routing key and bytes give the same id."""
    return str(uuid.uuid5(BUS_ID_NAMESPACE, f"{routing_key or ''}\n{raw_text}"))


def from_bus(
    body: dict[str, Any], routing_key: str | None = None, raw_text: str | None = None
) -> Event:
    key = RoutingKey.parse(routing_key) if routing_key else None
    category = key.category if key else guess_category(body)
    if raw_text is None:
        raw_text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    digest = bus_digest(routing_key, raw_text)
    event = Event(
        id=digest,
        type="?",
        category=category,
        created=normalise_time(body.get("eventDateTime")),
        source="amqp",
        raw=body,
        raw_text=raw_text,
        digest=digest,
    )
    _BUS_PARSERS[category](event, body, key)
    return event


def _action_event(event: Event, body: dict[str, Any], key: RoutingKey | None) -> None:
    """ActionEventUtils.publishOnEventBus: UUIDs for user, account and project; no level
    (a failed operation's Completed event says ``Error while ...``)."""
    event.type = _require_type(body.get("event") or _dotted(key and key.type), "ActionEvent")
    event.state = _text(body.get("status"))
    event.description = _text(body.get("description"))
    failed = (event.description or "").startswith(FAILED_PREFIX)
    event.level = "ERROR" if failed else _level(body.get("level"))
    event.account_id = _text(body.get("account"))
    event.user_id = _text(body.get("user"))
    event.project_id = _text(body.get("project"))
    event.resource_type = _text(body.get("entity")) or (key.resource_type if key else None)
    event.resource_id = _text(body.get("entityuuid")) or (key.resource_id if key else None)


def _alert_event(event: Event, body: dict[str, Any], key: RoutingKey | None) -> None:
    """AlertManagerImpl.publishAlertOnEventBus: subject and body, no level (WARN here;
    ``cloudstack.alert_levels`` may raise or lower one alert type)."""
    event.type = _require_type(body.get("event") or _dotted(key and key.type), "AlertEvent")
    event.level = "WARN"
    event.resource_type = key.resource_type if key else None
    event.resource_id = key.resource_id if key else None
    event.subject = _text(body.get("subject"))
    event.description = _text(body.get("body")) or event.subject


def _usage_event(event: Event, body: dict[str, Any], key: RoutingKey | None) -> None:
    """UsageEventUtils.publishUsageEvent: the resource as a Java class name."""
    event.type = _require_type(body.get("event") or _dotted(key and key.type), "UsageEvent")
    event.account_id = _text(body.get("account"))
    event.account = _text(body.get("accountName"))  # recent versions
    cls = _text(body.get("resource"))
    event.resource_type = USAGE_CLASSES.get(cls or "", cls)
    event.resource_id = _text(body.get("id"))
    event.description = f"usage {event.type} for {event.resource_type} {event.resource_id}"


def _state_event(event: Event, body: dict[str, Any], key: RoutingKey | None) -> None:
    old, new = _text(body.get("old-state")), _text(body.get("new-state"))
    event.type = _require_type(
        (key and key.type) or body.get("event") or "StateTransition", "ResourceStateEvent"
    )
    event.state = new
    event.resource_type = _text(body.get("resource"))
    event.resource_id = _text(body.get("id"))
    event.description = f"{body.get('resource')} {body.get('id')}: {old} -> {new}"


def parse_alert_levels(text: str) -> dict[str, str]:
    """``cloudstack.alert_levels``: ``ALERT.HOST=ERROR,ALERT.USAGE.*=INFO``."""
    levels: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, level = item.partition("=")
        if not sep or not kind.strip() or level.strip().upper() not in ("INFO", "WARN", "ERROR"):
            raise BadInput(
                f"{item!r}: give ALERT_TYPE=LEVEL pairs with INFO, WARN or ERROR, e.g."
                " ALERT.HOST=ERROR,ALERT.MEMORY=WARN"
            )
        levels[kind.strip().upper()] = level.strip().upper()
    return levels


def alert_level(event: Event, levels: dict[str, str]) -> str:
    """An alert's level as configured (exact type first, then globs), else WARN."""
    import fnmatch

    kind = event.type.upper()
    if kind in levels:
        return levels[kind]
    for pattern, level in levels.items():
        if fnmatch.fnmatchcase(kind, pattern):
            return level
    return event.level


def job_error(body: dict[str, Any]) -> str | None:
    """A failed job's error text: ``jobResult`` is an object in 4.20, a JSON string before."""
    result = body.get("jobResult")
    if isinstance(result, str):
        with contextlib.suppress(ValueError, RecursionError):
            result = json.loads(result)
    if isinstance(result, dict):
        return _text(result.get("errortext"))
    return None


def _job_event(event: Event, body: dict[str, Any], key: RoutingKey | None) -> None:
    """ApiServer.handleAsyncJobPublishEvent: the routing key's type is the job's phase
    (submit, update, complete); the operation is ``commandEventType``."""
    phase = key.type if key else None
    status = _text(body.get("status"))
    event.type = _require_type(body.get("commandEventType") or phase or "AsyncJob", "AsyncJobEvent")
    event.state = "/".join(p for p in (phase, status) if p) or None
    failed = status == "FAILED"
    event.level = "ERROR" if failed else "INFO"
    event.account_id = _text(body.get("account"))
    event.user_id = _text(body.get("user"))
    event.account = _text(body.get("accountname"))  # with event.accountinfo true
    event.username = _text(body.get("username"))
    event.resource_type = _text(body.get("instanceType"))
    event.resource_id = _text(body.get("instanceUuid"))
    error = job_error(body) if failed else None
    event.description = error or f"job {body.get('jobId')} {(status or 'unknown').lower()}"


_BUS_PARSERS = {
    "ActionEvent": _action_event,
    "AlertEvent": _alert_event,
    "UsageEvent": _usage_event,
    "ResourceStateEvent": _state_event,
    "AsyncJobEvent": _job_event,
}


def _dotted(key_part: str | None) -> str | None:
    """Routing keys carry the type with '.' replaced by '-'; undo it for ALERT-MEMORY etc."""
    return key_part.replace("-", ".") if key_part else None


# -- our own JSON and CloudEvents -----------------------------------------------------


def from_normalised(doc: dict[str, Any]) -> Event:
    values = {name: doc.get(name) for name in FIELDS}
    if not isinstance(values["id"], str) or not values["id"]:
        raise BadInput("event has no id")
    return Event(
        id=values["id"],
        type=_require_type(values["type"], "event"),
        level=_level(values["level"]),
        state=_text(values["state"]),
        category=_text(values["category"]) or "ActionEvent",
        created=normalise_time(values["created"]),
        account=_text(values["account"]),
        domain=_text(values["domain"]),
        username=_text(values["username"]),
        resource_type=_text(values["resource_type"]),
        resource_id=_text(values["resource_id"]),
        resource_name=_text(values["resource_name"]),
        description=_text(values["description"]),
        source=_text(values["source"]) or "stdin",
        **{name: _text(values[name]) for name in _ID_FIELDS},
        raw=doc.get("raw") if isinstance(doc.get("raw"), dict) else {},
    )


_ID_FIELDS = ("account_id", "domain_id", "user_id", "project", "project_id", "subject")


def from_cloudevent(doc: dict[str, Any]) -> Event:
    if doc.get("specversion") != "1.0":
        raise BadInput(f"unsupported CloudEvents specversion {doc.get('specversion')!r}")
    data = doc.get("data")
    ce_type = _require_type(doc.get("type"), "CloudEvent")
    if ce_type.startswith(CLOUDEVENTS_PREFIX):
        ce_type = ce_type[len(CLOUDEVENTS_PREFIX) :]
    if isinstance(data, dict) and "type" in data and "id" in data:
        event = from_normalised(data)
    elif isinstance(data, dict):
        event = (
            from_bus(data)
            if "event" in data or "eventDateTime" in data
            else from_normalised({"id": doc.get("id"), "type": ce_type, **data})
        )
    else:
        event = from_normalised({"id": doc.get("id"), "type": ce_type, "created": doc.get("time")})
    event.raw = doc
    return event


# -- dispatch on shape -------------------------------------------------------------------


def normalise(
    doc: Any, routing_key: str | None = None, source: str | None = None, checked: bool = False
) -> list[Event]:
    """All events in one parsed JSON document, whatever its shape. ``checked``: the caller
    made sure it holds no lone surrogate (``loads`` does, cheaply, from the text)."""
    if not isinstance(doc, dict):
        raise BadInput(f"expected a JSON object, got {type(doc).__name__}")
    if not checked:
        refuse_lone_surrogates(doc)
    if "listeventsresponse" in doc or is_list_inner(doc):
        events = [
            from_list_item(_object(i, "listEvents item"), "api", checked=True)
            for i in list_response_items(doc)
        ]
    elif "specversion" in doc:
        events = [from_cloudevent(doc)]
    elif "routing_key" in doc and ("body" in doc or "body_raw" in doc):
        key = doc["routing_key"] if isinstance(doc["routing_key"], str) else None
        if isinstance(doc.get("body_raw"), str):
            events = [parse_bus_body(doc["body_raw"].encode(), key)]
        else:
            events = [from_bus(_object(doc.get("body"), "bus message body"), key)]
    elif isinstance(doc.get("event"), dict) and "subscription" in doc:
        events = [from_normalised(doc["event"])]
    elif routing_key is not None:
        events = [from_bus(doc, routing_key)]
    elif "id" in doc and "type" in doc:
        ours = any(k in doc for k in ("category", "source", "resource_type", "raw"))
        events = [
            from_normalised(doc) if ours else from_list_item(doc, source or "api", checked=True)
        ]
    elif "type" in doc and not bus_like(doc):  # one of ours, or a listEvents row, cut short
        raise BadInput("the event has a 'type' but no 'id'; give each event a unique id")
    else:
        events = [from_bus(doc)]
    if source:
        for event in events:
            event.source = source
    return events


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadInput(f"{what} is not a JSON object")
    return value


def parse_bus_body(body: bytes, routing_key: str | None) -> Event:
    """An event-bus message as received: bytes of Gson-written JSON and its routing key."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("message body is not UTF-8") from None
    doc = loads(text)
    return from_bus(_object(doc, "message body"), routing_key, raw_text=text)


def refuse_lone_surrogates(doc: Any) -> None:
    """JSON may escape half of a UTF-16 pair (\\ud800) alone: no text can hold it, so the
    event could be neither sent nor recorded. It is refused here, and counted."""
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise BadInput(
            f"invalid Unicode: a lone surrogate {bad.encode('unicode_escape').decode()} (half"
            " of a UTF-16 pair) in the event"
        ) from None


class NonFinite(ValueError):
    """NaN, Infinity or a number too large for a float (1e999): JSON has no such value, and
    what we wrote on would not be JSON either."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFinite(f"the number {text[:20]} is too large")
    return value


def _no_constant(name: str) -> Any:
    raise NonFinite(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} is given twice")
        seen.add(key)
    return dict(pairs)


def strict_json(text: str | bytes, unique_keys: bool = False) -> Any:
    """``json.loads`` that refuses non-finite numbers (raises ``NonFinite``); with
    ``unique_keys``, an object that gives a key twice (a ValueError: which one wins is
    not what the sender may think)."""
    hook = _unique_keys if unique_keys else None
    return json.loads(
        text, parse_float=_finite, parse_constant=_no_constant, object_pairs_hook=hook
    )


def loads(text: str) -> Any:
    try:
        doc = strict_json(text)
    except NonFinite as exc:
        raise BadInput(f"invalid JSON ({exc})") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise BadInput("JSON nested too deeply") from None
    except ValueError as exc:  # e.g. a number of more than 4,300 digits
        raise BadInput(f"invalid JSON ({str(exc).split(';')[0]})") from None
    if "\\u" in text:  # only an escape can make a lone surrogate
        refuse_lone_surrogates(doc)
    return doc


@dataclass
class Rejected:
    where: str  # "line 3", "item 2"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def parse_stream(text: str, routing_key: str | None = None) -> Iterator[Event | Rejected]:
    """Events in a file: one JSON document (array, object, listeventsresponse) or JSON
    lines. Bad lines or items come out as ``Rejected`` and the rest goes on."""
    stripped = text.strip()
    if not stripped:
        return
    whole: Any = None
    if stripped[0] in "[{":
        try:
            whole = strict_json(stripped)
        except NonFinite as exc:  # in one document, or in the first of JSON lines
            if "\n" not in stripped:
                yield Rejected("line 1", f"invalid JSON ({exc})")
                return
        except (ValueError, RecursionError):  # not one document: JSON lines, or bad
            whole = None
    checked = "\\u" not in stripped  # only an escape can make a lone surrogate
    if isinstance(whole, list):
        for n, item in enumerate(whole, 1):
            make = lambda item=item: normalise(item, routing_key, checked=checked)  # noqa: E731
            yield from _safely(make, f"item {n}")
        return
    if isinstance(whole, dict) and ("listeventsresponse" in whole or is_list_inner(whole)):
        try:
            items = list_response_items(whole)
        except BadInput as exc:
            yield Rejected("line 1", exc.message)
            return
        for n, item in enumerate(items, 1):
            make = lambda item=item: [  # noqa: E731
                from_list_item(_object(item, "listEvents item"), "api", checked=checked)
            ]
            yield from _safely(make, f"event {n}")
        return
    if isinstance(whole, dict):
        yield from _safely(lambda: normalise(whole, routing_key, checked=checked), "line 1")
        return
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            make = lambda line=line: normalise(loads(line), routing_key, checked=True)  # noqa: E731
            yield from _safely(make, f"line {n}")


def _safely(make: Any, where: str) -> Iterator[Event | Rejected]:
    try:
        events = make()
    except BadInput as exc:
        yield Rejected(where, exc.message)
        return
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        yield Rejected(where, f"not a CloudStack event ({type(exc).__name__})")
        return
    yield from events


# -- CloudStack's own description JSON (for --format cloudstack) ------------------------

_GSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "=": "\\u003d", "'": "\\u0027"}


def java_hash(text: str) -> int:
    """``String.hashCode()``: over UTF-16 code units, 32 bits."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + (data[i] << 8 | data[i + 1])) & 0xFFFFFFFF
    return h


def hashmap_order(keys: list[str]) -> list[str]:
    """The order a ``java.util.HashMap`` of these keys iterates in, which is the order Gson
    writes CloudStack's event descriptions (ActionEventUtils, ApiServer and the others
    build them as HashMaps): by bucket (``hash ^ hash >>> 16`` masked by the table size,
    16 doubled while more than 3/4 full), ties in insertion order."""
    size = 16
    while len(keys) > size * 0.75:
        size *= 2

    def bucket(key: str) -> int:
        h = java_hash(key)
        return (h ^ (h >> 16)) & (size - 1)

    position = {key: n for n, key in enumerate(keys)}
    return sorted(keys, key=lambda k: (bucket(k), position[k]))


def as_hashmap(doc: Any) -> Any:
    """Objects re-ordered as CloudStack's HashMaps iterate (nested ones too)."""
    if isinstance(doc, dict):
        return {k: as_hashmap(doc[k]) for k in hashmap_order(list(doc))}
    if isinstance(doc, list):
        return [as_hashmap(v) for v in doc]
    return doc


def gson_dumps(doc: dict[str, Any]) -> str:
    """JSON as CloudStack's Gson writes it: compact, non-ASCII kept, HTML characters escaped,
    null values left out, keys in the order given (``as_hashmap`` for CloudStack's)."""
    text = json.dumps(
        {k: v for k, v in doc.items() if v is not None},
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    for char, escape in _GSON_ESCAPES.items():
        text = text.replace(char, escape)
    return text


def cloudstack_description(event: Event) -> str:
    """The body CloudStack's own webhooks send: the bus description JSON, byte for byte
    when the event came off the bus; otherwise built as ActionEventUtils.publishOnEventBus
    builds it (its keys, UUIDs where known, a HashMap's order, Gson's escaping)."""
    if event.raw_text is not None:
        return event.raw_text
    if event.source == "amqp" and event.raw:
        return gson_dumps(as_hashmap(event.raw))
    moment = parse_time(event.created) if event.created else datetime.now(UTC)
    doc: dict[str, Any] = {
        "eventDateTime": moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S +0000"),
        "event": event.type,
        "status": event.state,
        "description": event.description,
        "user": event.user_id,
        "account": event.account_id,
        "project": event.project_id,
        "entity": event.resource_type,
        "entityuuid": event.resource_id,
    }
    if event.resource_type and event.resource_id:
        doc[event.resource_type] = event.resource_id
    return gson_dumps(as_hashmap({k: v for k, v in doc.items() if v is not None}))
