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

from csnotify.errors import BadInput
from csnotify.fields import EVENT_FIELDS

CATEGORIES = ("ActionEvent", "AlertEvent", "UsageEvent", "ResourceStateEvent", "AsyncJobEvent")
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
    raw: dict[str, Any] = field(default_factory=dict)
    # The bus body exactly as received, for byte-compatible --format cloudstack.
    raw_text: str | None = field(default=None, repr=False, compare=False)
    _json: str | None = field(default=None, repr=False, compare=False)

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


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def now_iso() -> str:
    return utc_iso(datetime.now(UTC))


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
    text = str(value or "INFO").upper()
    return (
        {"WARNING": "WARN"}.get(text, text)
        if text in ("INFO", "WARN", "WARNING", "ERROR")
        else "INFO"
    )


# -- listEvents ------------------------------------------------------------------------


def from_list_item(item: dict[str, Any], source: str = "api") -> Event:
    if not isinstance(item.get("id"), str):
        raise BadInput("listEvents item has no id")
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


def from_bus(
    body: dict[str, Any], routing_key: str | None = None, raw_text: str | None = None
) -> Event:
    key = RoutingKey.parse(routing_key) if routing_key else None
    category = key.category if key else guess_category(body)
    if raw_text is None:
        raw_text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    event_id = str(uuid.uuid5(BUS_ID_NAMESPACE, f"{routing_key or ''}\n{raw_text}"))
    key_type = key.type if key else None
    common: dict[str, Any] = {
        "id": event_id,
        "category": category,
        "created": normalise_time(body.get("eventDateTime")),
        "source": "amqp",
        "raw": body,
        "raw_text": raw_text,
    }
    if category == "ActionEvent":
        return Event(
            type=_require_type(body.get("event") or _dotted(key_type), "ActionEvent"),
            level=_level(body.get("level")),
            state=_text(body.get("status")),
            account=_text(body.get("account")),
            username=_text(body.get("user")),
            resource_type=_text(body.get("entity")) or (key.resource_type if key else None),
            resource_id=_text(body.get("entityuuid")) or (key.resource_id if key else None),
            description=_text(body.get("description")),
            **common,
        )
    if category == "AlertEvent":
        return Event(
            type=_require_type(body.get("event") or _dotted(key_type), "AlertEvent"),
            level="WARN",
            resource_type=key.resource_type if key else None,
            resource_id=key.resource_id if key else None,
            description=_text(body.get("subject")) or _text(body.get("body")),
            **common,
        )
    if category == "UsageEvent":
        return Event(
            type=_require_type(body.get("event") or _dotted(key_type), "UsageEvent"),
            account=_text(body.get("account")),
            resource_type=_text(body.get("resource")),
            resource_id=_text(body.get("id")),
            description=f"usage {body.get('event')} for {body.get('resource')} {body.get('id')}",
            **common,
        )
    if category == "ResourceStateEvent":
        old, new = _text(body.get("old-state")), _text(body.get("new-state"))
        return Event(
            type=_require_type(
                key_type or body.get("event") or "StateTransition", "ResourceStateEvent"
            ),
            state=new,
            resource_type=_text(body.get("resource")),
            resource_id=_text(body.get("id")),
            description=f"{body.get('resource')} {body.get('id')}: {old} -> {new}",
            **common,
        )
    status = _text(body.get("status"))
    return Event(
        type=_require_type(key_type or "AsyncJob", "AsyncJobEvent"),
        level="ERROR" if status in ("FAILED",) else "INFO",
        state=status,
        account=_text(body.get("account")),
        username=_text(body.get("user")),
        resource_type=_text(body.get("instanceType")),
        resource_id=_text(body.get("instanceUuid")),
        description=f"{body.get('commandEventType')} job {body.get('jobId')} {status}",
        **common,
    )


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
        raw=doc.get("raw") if isinstance(doc.get("raw"), dict) else {},
    )


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


def normalise(doc: Any, routing_key: str | None = None, source: str | None = None) -> list[Event]:
    """All events in one parsed JSON document, whatever its shape."""
    if not isinstance(doc, dict):
        raise BadInput(f"expected a JSON object, got {type(doc).__name__}")
    refuse_lone_surrogates(doc)
    if "listeventsresponse" in doc or is_list_inner(doc):
        events = [
            from_list_item(_object(i, "listEvents item"), "api") for i in list_response_items(doc)
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
        events = [from_normalised(doc) if ours else from_list_item(doc, source or "api")]
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


def strict_json(text: str | bytes) -> Any:
    """``json.loads`` that refuses non-finite numbers (raises ``NonFinite``)."""
    return json.loads(text, parse_float=_finite, parse_constant=_no_constant)


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
    if isinstance(whole, list):
        for n, item in enumerate(whole, 1):
            yield from _safely(lambda item=item: normalise(item, routing_key), f"item {n}")
        return
    if isinstance(whole, dict) and ("listeventsresponse" in whole or is_list_inner(whole)):
        try:
            items = list_response_items(whole)
        except BadInput as exc:
            yield Rejected("line 1", exc.message)
            return
        for n, item in enumerate(items, 1):
            make = lambda item=item: [from_list_item(_object(item, "listEvents item"), "api")]  # noqa: E731
            yield from _safely(make, f"event {n}")
        return
    if isinstance(whole, dict):
        yield from _safely(lambda: normalise(whole, routing_key), "line 1")
        return
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield from _safely(lambda line=line: normalise(loads(line), routing_key), f"line {n}")


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


def gson_dumps(doc: dict[str, Any]) -> str:
    """JSON as CloudStack's Gson writes it: compact, non-ASCII kept, HTML characters escaped."""
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for char, escape in _GSON_ESCAPES.items():
        text = text.replace(char, escape)
    return text


def cloudstack_description(event: Event) -> str:
    """The body CloudStack's own webhooks send: the bus description JSON."""
    if event.raw_text is not None:
        return event.raw_text
    if event.source == "amqp" and event.raw:
        return gson_dumps(event.raw)
    moment = parse_time(event.created) if event.created else datetime.now(UTC)
    doc: dict[str, Any] = {
        "eventDateTime": moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S +0000"),
        "entityuuid": event.resource_id,
        "description": event.description,
        "event": event.type,
        "user": event.username,
        "account": event.account,
        "entity": event.resource_type,
        "status": event.state,
    }
    if event.resource_type and event.resource_id:
        doc[event.resource_type] = event.resource_id
    return gson_dumps({k: v for k, v in doc.items() if v is not None})
