"""Operator control: match (where an event would go), mute, mutes, unmute, redeliver."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.exceptions import Exit

from csnotify.cli.common import (
    JSON_OPT,
    LEVELS,
    NAME_ARG,
    AppState,
    _delivery_settings,
    app,
    complete_endpoints,
    complete_mute_ids,
    complete_names,
    render,
    state,
)
from csnotify.errors import BadInput
from csnotify.exitcodes import ExitCode

if TYPE_CHECKING:
    from csnotify.dispatch import RedeliverResult


@app.command()
def match(
    ctx: typer.Context,
    event_type: str | None = typer.Argument(
        None, metavar="[TYPE]", help="Event type, e.g. VM.START."
    ),
    level: str = typer.Option(
        "INFO",
        "--level",
        metavar="INFO|WARN|ERROR",
        help="The event's level.",
        autocompletion=LEVELS,
    ),
    where: list[str] = typer.Option(
        [], "--where", metavar="FIELD=VALUE", help="Set a field of the event (repeatable)."
    ),
    event_file: Path | None = typer.Option(
        None, "--event", metavar="FILE", help="Take the event from a file (any accepted shape)."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Show which subscriptions and endpoints an event would reach, and why the others
    would not (pattern, level, filter, disabled). Nothing is sent.

    \b
    Examples:
      csnotify match VM.START --where account=admin
      csnotify match VM.CREATE --level ERROR --json
      csnotify match --event captured-bus-message.json
    """
    from csnotify import reach
    from csnotify.events import Event, describe, parse_stream

    app_state = state(ctx)
    if event_file is not None:
        if event_type is not None:
            raise BadInput("give TYPE or --event FILE, not both")
        text = app_state.terminal.read_text(str(event_file))
        first = next(iter(parse_stream(text)), None)
        if not isinstance(first, Event):
            raise BadInput(
                f"{event_file}: {first if first is not None else 'no event in the file'}"
            )
        event = first
        if event.source == "amqp":  # names resolved as the listener would
            from csnotify import aio
            from csnotify.names import resolve

            aio.run(resolve(app_state.settings(), [event]))
    else:
        event = reach.typed_event(event_type, level, where)
    store = app_state.store()
    subs = store.subscriptions()
    verdicts = reach.verdicts(store, event, subs)
    found = {"event": event.fields(), "subscriptions": verdicts}
    render(app_state, found, as_json, lambda app_state, found: _matched_text(
        app_state, describe(event), found))  # fmt: skip


def _matched_text(app_state: AppState, described: str, found: dict[str, Any]) -> None:
    app_state.terminal.out(f"event: {described}")
    if not found["subscriptions"]:
        app_state.terminal.err("no subscriptions yet; create one with 'csnotify subscribe'")
        return
    for v in found["subscriptions"]:
        mark = "reaches" if v["matched"] else "skips  "
        app_state.terminal.out(f"{mark} {v['subscription']}: {v['reason']}")
        for ep in v["endpoints"]:
            state_word = "" if ep["enabled"] else " (endpoint switched off: not sent)"
            if ep["enabled"] and ep["muted"]:
                state_word = f" (muted, not sent: {ep['muted']})"
            app_state.terminal.out(f"          -> {ep['uri']}{state_word}")


def _mute_scope(m: dict[str, Any]) -> str:
    who = m["subscription"] or "all subscriptions"
    parts = [who, m["endpoint"] or "all endpoints", m["pattern"] or "all event types"]
    return ", ".join(parts)


def _left(seconds: int) -> str:
    if seconds <= 0:
        return "ended"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


@app.command()
def mute(
    ctx: typer.Context,
    name: str | None = typer.Argument(
        None, metavar="[NAME]", help="Subscription to mute.", autocompletion=complete_names
    ),
    every: bool = typer.Option(False, "--all", help="Mute every subscription."),
    endpoint: str | None = typer.Option(
        None,
        "--endpoint",
        metavar="URI",
        help="Only this endpoint.",
        autocompletion=complete_endpoints,
    ),
    pattern: str | None = typer.Option(
        None, "--pattern", metavar="GLOB", help="Only event types matching this, e.g. 'VM.*'."
    ),
    duration: str | None = typer.Option(
        None, "--for", metavar="DURATION", help="How long: 90s, 30m, 2h, 1d."
    ),
    until: str | None = typer.Option(
        None, "--until", metavar="TIME", help="Until this UTC time, e.g. 2026-11-25T22:00Z."
    ),
    reason: str | None = typer.Option(
        None, "--reason", metavar="TEXT", help="Why (shown by mutes and in deliveries)."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Silence a subscription (or all, or one endpoint, or some event types) for a while:
    a maintenance window. Muted events are not sent; they are recorded as 'muted' in
    deliveries and counted in status, never as failures. The mute ends by itself.

    \b
    Examples:
      csnotify mute oncall --for 2h --reason 'host upgrades, CHG-1234'
      csnotify mute --all --pattern 'VM.*' --until 2026-11-26T06:00Z --reason 'zone rebuild'
      csnotify mute vm-to-hooks --endpoint https://hooks.example/cs --for 30m --reason 'deploy'
    """
    from csnotify.mutes import MuteInput
    from csnotify.mutes import mute as make

    app_state = state(ctx)
    spec = MuteInput(name, every, endpoint, pattern, duration, until, reason)
    render(app_state, make(app_state.store(), spec).as_json(), as_json, _muted_text)


def _muted_text(app_state: AppState, made: dict[str, Any]) -> None:
    app_state.say(
        f"mute {made['id']}: {_mute_scope(made)} muted until {made['until']}"
        f" ({_left(made['seconds_left'])}); end it early with 'csnotify unmute {made['id']}'"
    )


@app.command()
def mutes(
    ctx: typer.Context,
    ended: bool = typer.Option(False, "--all", help="Also mutes that ended (in the last day)."),
    as_json: bool = JSON_OPT,
) -> None:
    """List mutes in force (with --all, also those that ended in the last day).

    \b
    Examples:
      csnotify mutes
      csnotify mutes --json | jq '.[].id'
    """
    from csnotify.mutes import active

    app_state = state(ctx)
    store = app_state.store()
    found = store.mutes() if ended else active(store)
    render(app_state, [m.as_json() for m in found], as_json, _mutes_text)


def _mutes_text(app_state: AppState, rows: list[dict[str, Any]]) -> None:
    if not rows:
        app_state.terminal.err("no mutes in force; create one with 'csnotify mute'")
        return
    table = [
        [
            m["id"],
            m["subscription"] or "(all)",
            m["endpoint"] or "(all)",
            m["pattern"] or "*",
            m["until"],
            _left(m["seconds_left"]),
            m["reason"],
        ]
        for m in rows
    ]
    columns = ["ID", "SUBSCRIPTION", "ENDPOINT", "PATTERN", "UNTIL", "LEFT", "REASON"]
    app_state.terminal.table(columns, table, optional=["PATTERN", "UNTIL"])


@app.command()
def unmute(
    ctx: typer.Context,
    ids: list[int] = typer.Argument(
        ...,
        metavar="ID...",
        help="Mute ids (see 'csnotify mutes').",
        autocompletion=complete_mute_ids,
    ),
) -> None:
    """End mutes now.

    \b
    Example:
      csnotify unmute 3
    """
    from csnotify.mutes import unmute as end

    app_state = state(ctx)
    for m in end(app_state.store(), ids):
        app_state.say(f"unmuted {m.id}: {_mute_scope(m.as_json())}")


@app.command()
def redeliver(
    ctx: typer.Context,
    name: str = NAME_ARG,
    endpoint: str | None = typer.Option(
        None,
        "--endpoint",
        metavar="URI",
        help="Only this endpoint.",
        autocompletion=complete_endpoints,
    ),
    since: str | None = typer.Option(
        None, "--since", metavar="TIME", help="From this time (ISO, or 30m, 2h, 1d ago)."
    ),
    until: str | None = typer.Option(
        None, "--until", metavar="TIME", help="Up to this time (ISO, or 30m, 2h, 1d ago)."
    ),
    failed: bool = typer.Option(False, "--failed", help="Only deliveries that failed."),
    as_json: bool = JSON_OPT,
) -> None:
    """Send again what the delivery log holds for a subscription in a window, oldest first,
    each with the webhook-id it had (receivers can de-duplicate). Use it after re-enabling
    an endpoint to fill the gap. Reports how many were sent and how many deliveries of the
    window the log no longer holds (it keeps log.max_per_endpoint per endpoint). Exit
    status 1 if any failed.

    \b
    Examples:
      csnotify enable vm-to-hooks --endpoint https://hooks.example/cs
      csnotify redeliver vm-to-hooks --since 2h --failed
      csnotify redeliver oncall --since 2026-11-25T08:00Z --until 2026-11-25T09:00Z
    """
    from csnotify import aio
    from csnotify.dispatch import redeliver as resend

    app_state = state(ctx)
    settings = _delivery_settings(app_state)
    store = app_state.store()
    result = aio.run(resend(store, settings, name, endpoint, since, until, failed))
    render(app_state, result, as_json, _redelivered_text)
    if result.stats.failed:
        raise Exit(int(ExitCode.FAILED))


def _redelivered_text(app_state: AppState, redelivered: RedeliverResult) -> None:
    result = redelivered.as_json()
    held = (
        f" ({result['muted']} muted, {result['folded']} folded)"
        if (result["muted"] or result["folded"])
        else ""
    )
    app_state.say(
        f"redelivered {result['in_log']} logged deliveries of {result['subscription']}:"
        f" {result['delivered']} delivered, {result['failed']} failed{held};"
        f" {result['not_in_log']} of the window no longer in the log"
    )
    for uri in result["skipped_switched_off"]:
        app_state.terminal.err(f"csnotify: left out {uri}: switched off")
