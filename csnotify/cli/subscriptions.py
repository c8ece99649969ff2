"""Subscriptions and their endpoints: subscribe, list, show, update, unsubscribe, enable,
disable."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.exceptions import Exit

from csnotify.cli.common import (
    CATEGORY_OPT,
    GROUP_WAIT_OPT,
    JSON_OPT,
    LEVELS,
    MAX_PER_MINUTE_OPT,
    NAME_ARG,
    STATE_OPT,
    STRICT_ORDER_OPT,
    WEBHOOK_FORMATS,
    AppState,
    _clock,
    app,
    complete_endpoints,
    endpoint_uris,
    render,
    secret_value,
    state,
)
from csnotify.errors import BadInput
from csnotify.exitcodes import ExitCode

if TYPE_CHECKING:
    from csnotify import subscriptions
    from csnotify.models import Subscription
    from csnotify.output import Terminal


@app.command()
def subscribe(
    ctx: typer.Context,
    patterns: list[str] = typer.Argument(
        ..., metavar="PATTERN...", help="Event-type globs, e.g. 'VM.*' '*.CREATE' '*'."
    ),
    to: list[str] = typer.Option(
        [],
        "--to",
        metavar="URI|-",
        help="Endpoint: https://..., cmd:/PROGRAM ARGS, or an Apprise URI; - reads them from"
        " stdin (one a line), keeping passwords out of argv.",
    ),
    to_file: Path | None = typer.Option(
        None, "--to-file", metavar="FILE", help="Endpoints from FILE, one URI a line."
    ),
    name: str | None = typer.Option(
        None, "--name", help="Name (default: made from pattern and endpoint)."
    ),
    key: str | None = typer.Option(
        None,
        "--key",
        metavar="SECRET|generate|-",
        help="Sign webhooks; 'generate' makes a whsec_ key; - reads it from stdin.",
    ),
    level: str = typer.Option(
        "INFO", "--level", metavar="INFO|WARN|ERROR", help="Minimum level.", autocompletion=LEVELS
    ),
    where: list[str] = typer.Option(
        [], "--where", metavar="FIELD=VALUE|FIELD~REGEX", help="Filter (repeatable, ANDed)."
    ),
    category: list[str] = CATEGORY_OPT,
    state_: list[str] = STATE_OPT,
    fmt: str = typer.Option(
        "json",
        "--format",
        metavar="json|cloudevents|cloudstack",
        help="Webhook body.",
        autocompletion=WEBHOOK_FORMATS,
    ),
    title: str | None = typer.Option(None, "--title", help="Title template for human channels."),
    body: str | None = typer.Option(None, "--body", help="Body template for human channels."),
    max_per_minute: str | None = MAX_PER_MINUTE_OPT,
    group_wait: str | None = GROUP_WAIT_OPT,
    strict_order: bool | None = STRICT_ORDER_OPT,
    disabled: bool = typer.Option(False, "--disabled", help="Create it switched off."),
    as_json: bool = JSON_OPT,
) -> None:
    """Create a subscription: deliver events whose type matches PATTERN to each --to.

    Endpoints: http(s) URLs get a signed JSON POST (with --key); cmd:PROGRAM ARGS runs a
    local program with the event on stdin; anything else is an Apprise URI (mailto://,
    smseagle://, ntfy://, slack://, ...). Templates use {type} {level} {state}
    {resource_type} {resource_name} {description} {account} and other event fields.

    Email, SMS and chat endpoints get at most delivery.human_max_per_minute messages a
    minute (default 10); what goes over is sent as one digest when the minute is up.
    --max-per-minute sets the limit for the endpoints given (0: none; webhooks and
    commands have none unless set). --group-wait collects the events of a burst for that
    long and sends them to human endpoints as one message.

    Events of one resource reach an endpoint in the order they were accepted; events of
    different resources go out in parallel (delivery.per_endpoint at once).
    --strict-order sends one at a time, in acceptance order, for receivers that need it.

    By default a subscription gets each operation once: its outcome (the Completed
    ActionEvent, success or failure, or the Created one of a create that failed) and
    alerts. --category and --state ask for other
    phases and categories (Scheduled, Started; UsageEvent, ResourceStateEvent,
    AsyncJobEvent). --format cloudstack gets ActionEvents only, as CloudStack's webhooks.

    \b
    Examples:
      csnotify subscribe 'VM.*' --to https://hooks.example/cs --key generate
      csnotify subscribe 'VM.*' --state Scheduled --state Completed --to https://hooks.example/cs
      csnotify subscribe '*' --level ERROR --name oncall --group-wait 30s --to - \\
          < oncall-mail.uri   # mailto://user:pass@smtp.example?to=oncall@example
      csnotify subscribe VM.START VM.STOP --to 'cmd:/usr/local/bin/dns-update' \\
          --where account=admin --where 'resource_name~^web-'
    """
    from csnotify import subscriptions

    app_state = state(ctx)
    if key == "-" and "-" in to:
        raise BadInput("--key - and --to - both read stdin; put the URIs in --to-file")
    key = secret_value(key, app_state.terminal, "signing key")
    spec = subscriptions.SubscriptionInput(
        patterns=patterns,
        to=endpoint_uris(to, to_file, app_state.terminal),
        name=name,
        key=key,
        level=level,
        where=where,
        format=fmt,
        title=title,
        body=body,
        max_per_minute=max_per_minute,
        group_wait=group_wait,
        strict_order=strict_order,
        categories=category,
        states=state_,
    )
    created = subscriptions.subscribe(app_state.store(), spec, enabled=not disabled)
    _notes(app_state, created.subscription)
    render(app_state, created, as_json, _created_text)


def _created_text(app_state: AppState, created: subscriptions.Created) -> None:
    sub = created.subscription
    state_word = "" if sub.enabled else " (disabled)"
    app_state.say(
        f"created subscription {sub.name}{state_word}: {' '.join(sub.patterns)}"
        f" -> {len(sub.endpoints)} endpoint(s)"
    )
    if created.generated_key:
        app_state.terminal.out(f"signing key (shown once, keep it): {created.generated_key}")


def _notes(app_state: AppState, sub: Subscription) -> None:
    from csnotify.subscriptions import notes

    settings = app_state.settings()
    keys = bool(settings["cloudstack.api_key"] and settings["cloudstack.secret_key"])
    for line in notes(sub, keys):
        app_state.terminal.err(f"csnotify: note: {line}")


def _warn_group_wait(app_state: AppState, sub: Subscription) -> None:
    from csnotify.subscriptions import group_wait_note

    if (note := group_wait_note(sub)) is not None:
        app_state.terminal.err(f"csnotify: note: {note}")


@app.command("list")
def list_(
    ctx: typer.Context,
    as_json: bool = JSON_OPT,
    reveal: bool = typer.Option(False, "--reveal", help="Show keys and URI secrets."),
) -> None:
    """List subscriptions with their state and endpoint failure counts.

    \b
    Examples:
      csnotify list
      csnotify list --json | jq -r '.[].name'
    """
    from csnotify.status import subscription_docs

    app_state = state(ctx)
    store = app_state.store()
    subs = store.subscriptions()
    docs = subscription_docs(store, subs, reveal) if as_json else []
    render(app_state, docs, as_json, lambda app_state, _docs: _list_text(app_state, subs))


def _list_text(app_state: AppState, subs: list[Subscription]) -> None:
    from csnotify.subscriptions import summary

    if not subs:
        app_state.terminal.err("no subscriptions yet; create one with 'csnotify subscribe'")
        return
    rows = [list(summary(s).values()) for s in subs]
    columns = [
        "NAME",
        "PATTERNS",
        "LEVEL",
        "ENDPOINTS",
        "STATE",
        "FAILING",
        "LAST OK",
        "LAST ERROR",
        "OWNER",
        "WARNING",
    ]
    columns, rows = _warning_column(columns, rows)
    if all(row[columns.index("OWNER")] == "-" for row in rows):  # all made at a shell
        rows = [row[:8] + row[9:] for row in rows]
        columns = columns[:8] + columns[9:]
    app_state.terminal.table(columns, rows, optional=["PATTERNS", "LAST OK", "LAST ERROR", "OWNER"])


def _warning_column(columns: list[str], rows: list[list[Any]]) -> tuple[list[str], list[Any]]:
    """The last column (WARNING) is shown only when a row has one, and then never left
    out for width: a TLS check turned off is what an operator must see."""
    if any(row[-1] for row in rows):
        return columns, [[*row[:-1], "; ".join(row[-1]) or None] for row in rows]
    return columns[:-1], [row[:-1] for row in rows]


def _limit_text(limit: int, own: int | None) -> str:
    text = f"{limit}/min" if limit else "none"
    return text if own is not None else f"{text} (default)"


def _render_subscription(
    terminal: Terminal, sub: Subscription, data: dict[str, Any], human_default: int
) -> None:
    from csnotify.templates import DEFAULT_TITLE

    pairs: list[tuple[str, Any]] = [
        ("name", sub.name),
        ("state", "enabled" if sub.enabled else "disabled"),
        ("patterns", sub.patterns),
        ("level", f"{sub.level} and above"),
        ("where", data["where"] or None),
        ("format", sub.format),
        ("key", data["key"]),
    ]
    if "key_whsec" in data:
        pairs.append(("key (whsec_)", data["key_whsec"]))
    pairs += [
        ("title", sub.title or f"{DEFAULT_TITLE} (default)"),
        ("body", sub.body or "(default)"),
        ("group wait", f"{sub.group_wait:g} s (human endpoints)" if sub.group_wait else "off"),
        ("created", sub.created),
        ("updated", sub.updated),
    ]
    if sub.owner_scope is not None:
        from csnotify.subscriptions import owner_text

        pairs.append(("owner", owner_text(sub)))
    terminal.fields(pairs)
    terminal.out()
    columns = ["ENDPOINT", "KIND", "STATE", "LIMIT", "CONSEC", "FAILED", "OK", "MUTED", "FOLDED"]
    columns += ["DROPPED", "BACKLOG", "NEXT TRY", "LAST OK", "LAST ERROR", "WARNING"]
    rows = []
    for ep, ep_obj in zip(data["endpoints"], sub.endpoints, strict=True):
        ep_state = "enabled" if ep["enabled"] else f"disabled: {ep['disabled_reason'] or '-'}"
        if ep["strict_order"]:
            ep_state += ", strict order"
        last_error = f"{ep['last_error_at']} {ep['last_error']}" if ep["last_error"] else None
        if ep["pending_error"]:  # why the backlog waits, before any delivery was given up
            last_error = f"pending: {ep['pending_error']}"
        rows.append(
            [
                ep["uri"],
                ep["kind"],
                ep_state,
                _limit_text(ep_obj.limit(human_default), ep_obj.max_per_minute),
                ep["consecutive_failures"],
                ep["total_failures"],
                ep["total_successes"],
                ep["total_muted"],
                ep["total_folded"],
                ep["total_dropped"],
                ep["backlog"],
                _clock(ep["next_attempt"], ep["enabled"]),
                ep["last_success_at"],
                last_error,
                ep["warnings"],
            ]
        )
    columns, rows = _warning_column(columns, rows)
    optional = ["KIND", "CONSEC", "LAST OK", "MUTED", "FOLDED", "DROPPED", "LIMIT", "NEXT TRY"]
    optional.append("BACKLOG")
    terminal.table(columns, rows, optional=optional)


@app.command()
def show(
    ctx: typer.Context,
    name: str = NAME_ARG,
    as_json: bool = JSON_OPT,
    reveal: bool = typer.Option(False, "--reveal", help="Show the key (and its whsec_ form)."),
) -> None:
    """Show one subscription: settings, endpoints, counters, last success and error.

    \b
    Examples:
      csnotify show vm-to-hooks
      csnotify show vm-to-hooks --reveal --json | jq -r .key_whsec
    """
    from csnotify.status import subscription_docs
    from csnotify.subscriptions import find

    app_state = state(ctx)
    store = app_state.store()
    sub = find(store, name)
    (data,) = subscription_docs(store, [sub], reveal)

    def text(app_state: AppState, data: dict[str, Any]) -> None:
        human_default = app_state.settings()["delivery.human_max_per_minute"]
        _render_subscription(app_state.terminal, sub, data, human_default)

    render(app_state, data, as_json, text)


@app.command()
def update(
    ctx: typer.Context,
    name: str = NAME_ARG,
    pattern: list[str] = typer.Option([], "--pattern", help="Replace the patterns (repeatable)."),
    to: list[str] = typer.Option(
        [], "--to", metavar="URI|-", help="Replace the endpoints (repeatable; - reads stdin)."
    ),
    to_file: Path | None = typer.Option(
        None, "--to-file", metavar="FILE", help="Replace the endpoints with FILE's URIs."
    ),
    add_to: list[str] = typer.Option(
        [], "--add-to", metavar="URI", help="Add an endpoint (-: URIs from stdin, one a line)."
    ),
    remove_to: list[str] = typer.Option(
        [],
        "--remove-to",
        metavar="URI",
        help="Remove an endpoint (as list shows it, or in full).",
        autocompletion=complete_endpoints,
    ),
    rename: str | None = typer.Option(None, "--rename", metavar="NEW", help="Rename it."),
    key: str | None = typer.Option(
        None, "--key", metavar="SECRET|generate|-", help="Set the signing key (- reads stdin)."
    ),
    no_key: bool = typer.Option(False, "--no-key", help="Stop signing."),
    rotate_key: bool = typer.Option(False, "--rotate-key", help="Make a new key; shown once."),
    level: str | None = typer.Option(
        None, "--level", metavar="INFO|WARN|ERROR", help="Minimum level.", autocompletion=LEVELS
    ),
    where: list[str] = typer.Option([], "--where", help="Replace the filters (repeatable)."),
    no_where: bool = typer.Option(False, "--no-where", help="Remove all filters."),
    category: list[str] = CATEGORY_OPT,
    state_: list[str] = STATE_OPT,
    outcomes: bool = typer.Option(
        False,
        "--outcomes",
        help="Back to the default: outcomes and alerts (no --category/--state).",
    ),
    fmt: str | None = typer.Option(
        None, "--format", metavar="json|cloudevents|cloudstack", autocompletion=WEBHOOK_FORMATS
    ),
    title: str | None = typer.Option(None, "--title", help="Title template ('' for the default)."),
    body: str | None = typer.Option(None, "--body", help="Body template ('' for the default)."),
    max_per_minute: str | None = MAX_PER_MINUTE_OPT,
    strict_order: bool | None = STRICT_ORDER_OPT,
    endpoint: str | None = typer.Option(
        None,
        "--endpoint",
        metavar="URI",
        help="With --max-per-minute or --strict-order: only this endpoint.",
        autocompletion=complete_endpoints,
    ),
    group_wait: str | None = GROUP_WAIT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Change a subscription. Options not given stay as they are; endpoints that stay keep
    their counters.

    \b
    Examples:
      csnotify update vm-to-hooks --pattern 'VM.*' --pattern 'VOLUME.*'
      csnotify update vm-to-hooks --add-to https://backup.example/cs
      csnotify update vm-to-hooks --rotate-key
      csnotify update oncall --max-per-minute 5 --group-wait 1m
      csnotify update vm-to-hooks --strict-order --endpoint https://hooks.example/cs
    """
    from csnotify import subscriptions

    if where and no_where:
        raise BadInput("--where and --no-where cannot be combined")
    if outcomes and (category or state_):
        raise BadInput("--outcomes cannot be combined with --category or --state")
    app_state = state(ctx)
    readers = [o for o, v in (("--key", [key]), ("--to", to), ("--add-to", add_to)) if "-" in v]
    if len(readers) > 1:
        both = "both" if len(readers) == 2 else "all"
        raise BadInput(
            f"{' and '.join(f'{o} -' for o in readers)} {both} read stdin; put the URIs in"
            " --to-file"
        )
    key = secret_value(key, app_state.terminal, "signing key")
    if "-" in to or to_file is not None:
        to = endpoint_uris(to, to_file, app_state.terminal)
    if "-" in add_to:
        add_to = endpoint_uris(add_to, None, app_state.terminal, "--add-to")
    spec = subscriptions.SubscriptionInput(
        patterns=pattern or None,
        to=to or None,
        name=rename,
        key=key,
        level=level,
        where=[] if no_where else (where or None),
        format=fmt,
        title=title,
        body=body,
        max_per_minute=max_per_minute,
        group_wait=group_wait,
        strict_order=strict_order,
        categories=[] if outcomes else (category or None),
        states=[] if outcomes else (state_ or None),
    )
    result = subscriptions.update(
        app_state.store(),
        name,
        spec,
        add_to=add_to,
        remove_to=remove_to,
        no_key=no_key,
        rotate_key=rotate_key,
        limit_endpoint=endpoint,
    )
    if group_wait is not None:
        _warn_group_wait(app_state, result.subscription)
    _notes(app_state, result.subscription)
    if result.discarded:
        app_state.terminal.err(
            f"csnotify: warning: {result.discarded} pending deliveries of the removed"
            " endpoint(s) were given up"
        )
    render(app_state, result, as_json, _updated_text)


def _updated_text(app_state: AppState, result: subscriptions.Updated) -> None:
    app_state.say(f"updated subscription {result.subscription.name}")
    if result.generated_key:
        app_state.terminal.out(f"new signing key (shown once, keep it): {result.generated_key}")


@app.command()
def unsubscribe(
    ctx: typer.Context,
    name: str = NAME_ARG,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Delete a subscription and its endpoints' counters (asks first on a terminal).

    \b
    Example:
      csnotify unsubscribe vm-to-hooks --yes
    """
    from csnotify import subscriptions

    app_state = state(ctx)
    store = app_state.store()
    sub = subscriptions.find(store, name)
    if (
        not yes
        and app_state.terminal.stdin_is_tty
        and not app_state.terminal.confirm(
            f"Delete subscription {sub.name} ({len(sub.endpoints)} endpoint(s))?"
        )
    ):
        raise Exit(int(ExitCode.FAILED))
    subscriptions.unsubscribe(store, sub.name, expected_id=sub.id)
    app_state.say(f"deleted subscription {sub.name}")


def _switch(ctx: typer.Context, name: str, endpoint: str | None, enabled: bool) -> None:
    from csnotify import subscriptions
    from csnotify.redact import mask_uri

    app_state = state(ctx)
    sub = subscriptions.set_enabled(app_state.store(), name, enabled, endpoint)
    what = (
        f"endpoint {mask_uri(sub.endpoint(endpoint).uri)} of {sub.name}" if endpoint else sub.name
    )
    app_state.say(f"{'enabled' if enabled else 'disabled'} {what}")


ENDPOINT_OPT = typer.Option(
    None, "--endpoint", metavar="URI", help="Only this endpoint.", autocompletion=complete_endpoints
)


@app.command()
def enable(ctx: typer.Context, name: str = NAME_ARG, endpoint: str | None = ENDPOINT_OPT) -> None:
    """Switch a subscription or one endpoint on; resets its failure counters.

    \b
    Examples:
      csnotify enable vm-to-hooks
      csnotify enable vm-to-hooks --endpoint https://hooks.example/cs
    """
    _switch(ctx, name, endpoint, True)


@app.command()
def disable(ctx: typer.Context, name: str = NAME_ARG, endpoint: str | None = ENDPOINT_OPT) -> None:
    """Switch a subscription or one endpoint off; nothing is sent to it until 'enable'.

    \b
    Examples:
      csnotify disable vm-to-hooks
      csnotify disable vm-to-hooks --endpoint https://hooks.example/cs
    """
    _switch(ctx, name, endpoint, False)
