"""Which subscriptions an event reaches: type patterns, minimum level, ``--where`` filters.

Patterns are case-insensitive globs on the event type (``VM.*``, ``*.CREATE``, ``*``).
Level is a minimum (INFO < WARN < ERROR). Filters AND together: ``FIELD=VALUE`` is an
exact match, ``FIELD~REGEX`` a regular-expression search.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from csnotify.errors import BadInput

LEVELS = ("INFO", "WARN", "ERROR")
LEVEL_RANK = {name: rank for rank, name in enumerate(LEVELS)}
_LEVEL_ALIASES = {"WARNING": "WARN"}

# Fields of the normalised event a --where filter may test.
FILTER_FIELDS = (
    "account",
    "domain",
    "username",
    "resource_type",
    "resource_id",
    "resource_name",
    "state",
    "category",
    "description",
    "source",
    "type",
)

_PATTERN = re.compile(r"^[A-Za-z0-9_\-*?]+(\.[A-Za-z0-9_\-*?]+)*$")
MAX_PATTERN = 200


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
