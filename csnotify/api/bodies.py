"""Request bodies of the API: their JSON types and known fields checked (400 otherwise),
then turned into the core's ``SubscriptionInput``, which validates every value as the CLI
does (422 for what it refuses). Nothing here judges a value: only its JSON shape."""

from __future__ import annotations

import json
from typing import Any

from csnotify.errors import BadInput
from csnotify.subscriptions import SubscriptionInput


class Malformed(BadInput):
    """The body is not the JSON the operation takes (the API answers 400)."""


STR, STRS, BOOL, ENDPOINTS, RATE = "string", "array of strings", "boolean", "endpoints", "rate"

# field -> JSON shape; what a POST /v1/subscriptions body may hold
CREATE_FIELDS = {
    "name": STR,
    "patterns": STRS,
    "endpoints": ENDPOINTS,
    "level": STR,
    "where": STRS,
    "format": STR,
    "key": STR,
    "title": STR,
    "body": STR,
    "categories": STRS,
    "states": STRS,
    "group_wait": STR,
    "max_per_minute": RATE,
    "strict_order": BOOL,
    "enabled": BOOL,
}
# PATCH: the same (name renames); "key": null stops signing
UPDATE_FIELDS = {k: v for k, v in CREATE_FIELDS.items() if k != "enabled"}


def parse_json(raw: bytes) -> dict[str, Any]:
    from csnotify.events import strict_json

    try:
        doc = strict_json(raw.decode("utf-8"), unique_keys=True) if raw.strip() else None
    except UnicodeDecodeError:
        raise Malformed("the request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise Malformed(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise Malformed("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # a non-finite number, or one of more than 4,300 digits
        raise Malformed(f"malformed JSON: {str(exc).split(';')[0]}") from None
    if not isinstance(doc, dict):
        raise Malformed("the request body must be a JSON object")
    return doc


def _shape(name: str, value: Any, shape: str) -> Any:
    if shape == ENDPOINTS and isinstance(value, list):
        for item in value:
            extra = sorted(set(item) - {"uri"}) if isinstance(item, dict) else []
            if extra:
                raise Malformed(f"unknown field {extra[0]!r} in 'endpoints'; an endpoint has 'uri'")
    ok = {
        STR: isinstance(value, str),
        STRS: isinstance(value, list) and all(isinstance(v, str) for v in value),
        BOOL: isinstance(value, bool),
        RATE: (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str),
        ENDPOINTS: isinstance(value, list)
        and all(
            isinstance(v, dict) and set(v) == {"uri"} and isinstance(v["uri"], str) for v in value
        ),
    }[shape]
    if not ok:
        what = {
            ENDPOINTS: 'an array of objects {"uri": "..."}',
            RATE: "a whole number or 'default'",
        }.get(shape, f"a {shape}" if shape != STRS else "an array of strings")
        raise Malformed(f"field {name!r} must be {what}")
    return value


def checked(doc: dict[str, Any], fields: dict[str, str], nullable: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(doc) - set(fields))
    if unknown:
        raise Malformed(f"unknown field {unknown[0]!r}; the fields are {', '.join(fields)}")
    for name, value in doc.items():
        if value is None and name in nullable:
            continue
        _shape(name, value, fields[name])


def subscription_input(doc: dict[str, Any]) -> SubscriptionInput:
    """A checked body as the core's input: fields not given stay None (not given)."""
    rate = doc.get("max_per_minute")
    return SubscriptionInput(
        patterns=doc.get("patterns"),
        to=[e["uri"] for e in doc["endpoints"]] if doc.get("endpoints") is not None else None,
        name=doc.get("name"),
        key=doc.get("key"),
        level=doc.get("level"),
        where=doc.get("where"),
        format=doc.get("format"),
        title=doc.get("title"),
        body=doc.get("body"),
        max_per_minute=str(rate) if rate is not None else None,
        group_wait=doc.get("group_wait"),
        strict_order=doc.get("strict_order"),
        categories=doc.get("categories"),
        states=doc.get("states"),
    )
