"""Subscriptions as files (JSON or TOML), for backup, review and copying to other listeners.

Import is idempotent by name and all-or-nothing: every entry is validated before the
store is touched, and the entries are written in one transaction.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from csnotify.errors import BadInput
from csnotify.files import write_private
from csnotify.models import COMMAND
from csnotify.redact import MASK, mask_uri
from csnotify.subscriptions import (
    MAX_GROUP_WAIT_S,
    MAX_RATE,
    Subscription,
    SubscriptionInput,
    build,
    check_name,
)

if TYPE_CHECKING:
    from csnotify.store import Store

FORMAT_VERSION = 1
EXPORT_FORMATS = ("json", "toml")
_ITEM_KEYS = {"name", "enabled", "patterns", "level", "where", "format", "key", "title", "body"}
_ITEM_KEYS |= {"endpoints", "group_wait", "categories", "states", "owner"}


def to_item(sub: Subscription, with_secrets: bool) -> dict[str, Any]:
    data = sub.as_json(reveal=with_secrets)
    item = {k: data[k] for k in ("name", "enabled", "patterns", "level", "where", "format")}
    for optional in ("key", "title", "body"):
        if data[optional] is not None:
            item[optional] = data[optional]
    if sub.group_wait:
        item["group_wait"] = sub.group_wait
    for scope in ("categories", "states"):
        if data[scope]:
            item[scope] = data[scope]
    if data["owner"] is not None:  # made through the API: its scope goes with it
        item["owner"] = data["owner"]
    item["endpoints"] = []
    for ep in data["endpoints"]:
        entry = {"uri": ep["uri"], "enabled": ep["enabled"]}
        if ep["disabled_reason"]:
            entry["disabled_reason"] = ep["disabled_reason"]
        if ep["max_per_minute"] is not None:
            entry["max_per_minute"] = ep["max_per_minute"]
        if ep["strict_order"]:
            entry["strict_order"] = True
        item["endpoints"].append(entry)
    return item


def export_text(subs: list[Subscription], fmt: str, with_secrets: bool) -> str:
    doc = {
        "csnotify_export": FORMAT_VERSION,
        "subscriptions": [to_item(s, with_secrets) for s in subs],
    }
    if fmt == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if fmt == "toml":
        import tomli_w

        return tomli_w.dumps(doc)
    raise BadInput(f"unknown export format {fmt!r}; use json or toml")


def write_export(path: Path, text: str) -> None:
    """Write an export file (mode 0600: it may hold secrets) into an existing directory."""
    if not path.parent.is_dir():
        raise BadInput(f"cannot write {path}: directory {path.parent} does not exist; create it")
    write_private(path, text.encode())


def parse_text(text: str, source: str) -> list[dict[str, Any]]:
    """The entries of an export file; JSON or TOML, told apart by the first character."""
    stripped = text.lstrip()
    try:
        doc = json.loads(text) if stripped.startswith(("{", "[")) else tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # JSON and TOML decode errors are ValueErrors
        reason = str(exc).splitlines()[0] if str(exc) else "nested too deeply"
        raise BadInput(f"{source} is neither valid JSON nor valid TOML: {reason}") from None
    if isinstance(doc, dict) and isinstance(doc.get("subscriptions"), list):
        version = doc.get("csnotify_export", FORMAT_VERSION)
        if version != FORMAT_VERSION or type(version) is not int:
            raise BadInput(
                f"{source} is in export format {version!r}; this csnotify reads format"
                f" {FORMAT_VERSION} (export it again with this version, or upgrade csnotify)"
            )
        entries = doc["subscriptions"]
    elif isinstance(doc, list):
        entries = doc
    else:
        raise BadInput(f"{source} has no 'subscriptions' list; is it a 'csnotify export' file?")
    return entries


def _text_list(entry: dict[str, Any], key: str, where: str) -> list[str]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadInput(f"{where}: '{key}' must be a list of strings")
    return value


def _checked_entry(entry: Any, where: str) -> Subscription:
    if not isinstance(entry, dict):
        raise BadInput(f"{where}: each subscription must be an object/table")
    unknown = set(entry) - _ITEM_KEYS
    if unknown:
        raise BadInput(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    name = entry.get("name")
    if not isinstance(name, str):
        raise BadInput(f"{where}: 'name' is missing or not a string")
    where = f"{where} ({name})"
    endpoints = entry.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        raise BadInput(f"{where}: 'endpoints' must be a non-empty list")
    uris, flags, reasons, rates, orders = [], [], [], [], []
    for ep in endpoints:
        if not isinstance(ep, dict) or not isinstance(ep.get("uri"), str):
            raise BadInput(f"{where}: each endpoint needs a 'uri' string")
        if MASK in ep["uri"]:
            raise BadInput(
                f"{where}: an endpoint URI was exported masked; export again with --with-secrets"
            )
        uris.append(ep["uri"])
        flags.append(ep.get("enabled", True))
        reasons.append(ep.get("disabled_reason") or "disabled in imported file")
        rate = ep.get("max_per_minute")
        if rate is not None and (type(rate) is not int or not 0 <= rate <= MAX_RATE):
            raise BadInput(f"{where}: 'max_per_minute' must be a whole number from 0 to {MAX_RATE}")
        rates.append(rate)
        strict = ep.get("strict_order", False)
        if not isinstance(strict, bool):
            raise BadInput(f"{where}: 'strict_order' must be true or false")
        orders.append(strict)
    group_wait = entry.get("group_wait", 0)
    if type(group_wait) not in (int, float) or not 0 <= group_wait <= MAX_GROUP_WAIT_S:
        raise BadInput(f"{where}: 'group_wait' must be seconds from 0 to {MAX_GROUP_WAIT_S:g}")
    key = entry.get("key")
    if key == MASK:
        raise BadInput(f"{where}: the key was exported masked; export again with --with-secrets")
    for opt in ("key", "title", "body", "level", "format"):
        if opt in entry and not isinstance(entry[opt], str):
            raise BadInput(f"{where}: '{opt}' must be a string")
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool) or not all(isinstance(f, bool) for f in flags):
        raise BadInput(f"{where}: 'enabled' must be true or false")
    spec = SubscriptionInput(
        patterns=_text_list(entry, "patterns", where),
        to=uris,
        name=check_name(name),
        key=key,
        level=entry.get("level"),
        where=_text_list(entry, "where", where),
        format=entry.get("format"),
        title=entry.get("title"),
        body=entry.get("body"),
        categories=_text_list(entry, "categories", where) if "categories" in entry else None,
        states=_text_list(entry, "states", where) if "states" in entry else None,
    )
    try:
        sub, _ = build(spec, taken=set())
    except BadInput as exc:
        raise BadInput(f"{where}: {exc.message}") from None
    sub.enabled = enabled
    sub.group_wait = float(group_wait)
    for ep, flag, reason, rate, strict in zip(
        sub.endpoints, flags, reasons, rates, orders, strict=True
    ):
        ep.enabled = flag
        ep.disabled_reason = None if flag else str(reason)
        ep.max_per_minute = rate
        ep.strict_order = strict
    return sub


def _with_owner(sub: Subscription, entry: dict[str, Any], where: str) -> Subscription:
    """An entry's owner (made through the API), so its scope survives export and import."""
    from csnotify.tokens import SCOPES

    owner = entry.get("owner")
    if owner is None:
        return sub
    if (
        not isinstance(owner, dict)
        or set(owner) != {"scope", "account", "domain"}
        or owner["scope"] not in SCOPES
        or not all(isinstance(owner[k], str | None) for k in ("account", "domain"))
    ):
        raise BadInput(
            f"{where}: 'owner' must be {{scope: account|domain|global, account, domain}}"
        )
    sub.owner_scope, sub.owner_account, sub.owner_domain = (
        owner["scope"], owner["account"], owner["domain"])  # fmt: skip
    return sub


@dataclass
class ImportResult:
    created: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # exist and differ; --replace to overwrite

    def as_json(self) -> dict[str, list[str]]:
        return {k: getattr(self, k) for k in ("created", "replaced", "unchanged", "skipped")}


class CommandsNeedApproval(BadInput):
    """The import would run programs that the store does not run yet."""

    def __init__(self, source: str, commands: list[str]) -> None:
        super().__init__(
            f"{source} would run {len(commands)} new or changed cmd: program(s):"
            f" {'; '.join(commands)}; check them, then import with --allow-commands"
        )
        self.commands = commands


def new_commands(store: Store, subs: list[Subscription], replace: bool) -> list[str]:
    """``name: cmd:...`` (masked) for each cmd: endpoint the import would add: a file from
    elsewhere must not silently turn a webhook into a program run on this host."""
    found = []
    for sub in subs:
        current = store.subscription(sub.name)
        if current is not None and not replace:
            continue  # left as it is
        have = {ep.uri for ep in current.endpoints} if current is not None else set()
        found += [
            f"{sub.name}: {mask_uri(ep.uri)}"
            for ep in sub.endpoints
            if ep.kind == COMMAND and ep.uri not in have
        ]
    return found


def import_entries(
    store: Store,
    entries: list[Any],
    source: str,
    replace: bool = False,
    allow_commands: bool = False,
) -> ImportResult:
    subs = []
    for i, entry in enumerate(entries):
        where = f"{source}: subscription {i + 1}"
        subs.append(_with_owner(_checked_entry(entry, where), entry, where))
    names = [s.name for s in subs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BadInput(f"{source}: name(s) given more than once: {', '.join(dupes)}")
    result = ImportResult()
    with store.transaction():
        if not allow_commands and (commands := new_commands(store, subs, replace)):
            raise CommandsNeedApproval(source, commands)
        for sub in subs:
            current = store.subscription(sub.name)
            if current is None:
                store.insert(sub)
                result.created.append(sub.name)
            elif to_item(current, True) == to_item(sub, True):
                result.unchanged.append(sub.name)
            elif replace:
                store.save(sub.name, sub, endpoint_flags=True)
                result.replaced.append(sub.name)
            else:
                result.skipped.append(sub.name)
    return result
