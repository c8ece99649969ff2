"""Title and body of messages for human channels (email, SMS, chat).

Templates use ``{field}`` placeholders naming fields of the normalised event, with an
optional format spec (``{description:.120}``). Nothing else: no attribute or index
access, no positional fields, no conversions, so a template can never reach into Python
objects. Every value is turned into text before it is formatted.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from csnotify.errors import BadInput
from csnotify.fields import EVENT_FIELDS

FIELDS = (*EVENT_FIELDS, "subscription")

# What ``show`` says the default is; the default itself is ``default_title`` (it leaves
# out what the event does not have, and words failures and alerts differently).
DEFAULT_TITLE = "[CloudStack] {type} {state}: {resource_name}"
DEFAULT_BODY = "{level} {type} {state} {resource_type} {resource_name}\n{description}\n{created}"
# Separators a title must not end with when the field after them was empty.
DANGLING = " :-|,;/([–"


def tidy(text: str) -> str:
    """One line, single spaces, no separator left dangling at the end."""
    return " ".join(text.split()).rstrip(DANGLING).replace("()", "").strip()


def _phase(state: str | None) -> str:
    """``Completed`` as is; an async job's ``complete/SUCCEEDED`` as ``SUCCEEDED``."""
    return (state or "").rsplit("/", 1)[-1]


def default_title(values: Mapping[str, Any]) -> str:
    """``[CloudStack] VM.START Completed: web-01``; a failure
    ``[ERROR] VM.STOP failed: web-01 (Unable to stop vm: ...)``; an alert
    ``[WARN] ALERT.MEMORY: System Alert: Low Available Memory in cluster ...``."""
    level = values.get("level") or "INFO"
    tag = "[CloudStack]" if level == "INFO" else f"[{level}]"
    name = values.get("resource_name") or values.get("resource_id") or ""
    kind = values.get("type") or ""
    if values.get("category") == "AlertEvent" or values.get("subject"):
        text = f"{tag} {kind}: {values.get('subject') or values.get('description') or ''}"
    elif level == "ERROR" and values.get("category") in ("ActionEvent", "AsyncJobEvent"):
        text = f"{tag} {kind} failed: {name} ({values.get('description') or ''})"
    else:
        text = f"{tag} {kind} {_phase(values.get('state'))}: {name}"
    return tidy(text)


def default_body(values: Mapping[str, Any]) -> str:
    """What happened, to what, whose and when; empty parts left out."""
    what = " ".join(
        str(values[k])
        for k in ("level", "type", "state", "resource_type", "resource_name")
        if values.get(k)
    )
    who = ", ".join(
        f"{label} {values[k]}" for k, label in (("account", "account"), ("domain", "domain"),
                                                ("username", "user"), ("project", "project"))
        if values.get(k)
    )  # fmt: skip
    lines = [what, values.get("subject"), values.get("description"), who, values.get("created")]
    return "\n".join(str(line) for line in lines if line)


_formatter = string.Formatter()
MAX_WIDTH = 1000  # characters: a longer message is not read by a person anyway
_NUMBERS = re.compile(r"[0-9]+")


def _parts(template: str, what: str) -> list[tuple[str, str | None, str]]:
    try:
        parsed = list(_formatter.parse(template))
    except ValueError as exc:
        raise BadInput(f"{what} template {template!r} is malformed: {exc}") from None
    parts = []
    for literal, name, spec, conversion in parsed:
        if name is not None:
            if conversion or (spec and "{" in spec):
                raise BadInput(
                    f"{what} template {template!r}: only plain {{field}} or {{field:spec}}"
                    " placeholders are allowed"
                )
            if name not in FIELDS:
                raise BadInput(
                    f"{what} template {template!r}: {{{name}}} is not an event field;"
                    f" use {', '.join('{' + f + '}' for f in FIELDS)}"
                )
            _refuse_wide(template, spec or "", what)
            try:
                format("", spec or "")
            except ValueError as exc:
                raise BadInput(
                    f"{what} template {template!r}: bad format {spec!r}: {exc}"
                ) from None
        parts.append((literal, name, spec or ""))
    return parts


def _refuse_wide(template: str, spec: str, what: str) -> None:
    """A width or precision is a number of characters of a message: {type:>400000000}
    would cost 400 MB to check and to send, so more than MAX_WIDTH is refused."""
    for number in _NUMBERS.findall(spec):
        if len(number) > len(str(MAX_WIDTH)) or int(number) > MAX_WIDTH:
            raise BadInput(
                f"{what} template {template!r}: width or precision {number[:12]} is more than"
                f" {MAX_WIDTH}"
            )


def validate(template: str, what: str) -> str:
    _parts(template, what)
    return template


def render(template: str, values: Mapping[str, Any], what: str = "message") -> str:
    out = []
    for literal, name, spec in _parts(template, what):
        out.append(literal)
        if name is not None:
            value = values.get(name)
            out.append(format("" if value is None else str(value), spec))
    return "".join(out)
