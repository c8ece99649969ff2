"""How it is going: status (listeners, queue, endpoints; --watch) and demo (everything end
to end on this machine)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from typer.exceptions import Exit

from csnotify.cli.common import JSON_OPT, AppState, _clock, app, finite, redrawn, render, state
from csnotify.cli.control import _left, _mute_scope
from csnotify.exitcodes import ExitCode

if TYPE_CHECKING:
    from csnotify.output import Terminal


@app.command()
def status(
    ctx: typer.Context,
    as_json: bool = JSON_OPT,
    queue: bool = typer.Option(
        False, "--queue", help="Ask RabbitMQ for the queue depth even if no amqp listener ran."
    ),
    watch: bool = typer.Option(
        False, "--watch", "-w", help="Keep showing it, refreshed (Ctrl-C to stop)."
    ),
    interval: float = typer.Option(
        2.0, "--interval", min=0.2, callback=finite, help="Seconds between refreshes with --watch."
    ),
) -> None:
    """Show listeners (events seen, delivered, failed), API servers (address, requests),
    source cursors, the queue depth and every endpoint's state, counters and last error.

    \b
    Examples:
      csnotify status
      csnotify status --watch
      csnotify status --json | jq '.endpoints[] | select(.enabled | not)'
    """
    import time

    from csnotify import aio
    from csnotify.status import collect, queue_depth

    app_state = state(ctx)
    settings = app_state.settings()
    store = app_state.store()

    def snapshot() -> dict[str, Any]:
        report = collect(store)
        if queue or any(listener["source"] == "amqp" for listener in report["listeners"]):
            report["queue"] = aio.run(queue_depth(settings))
        return report

    if not watch:
        render(app_state, snapshot(), as_json, _status_text)
        return
    try:
        if not redrawn(app_state, as_json):  # one report after another (--json: JSON lines)
            while True:
                render(app_state, snapshot(), as_json, _watched_text, lines=True)
                app_state.terminal.stdout.flush()
                time.sleep(interval)
        from rich.live import Live

        with Live(console=app_state.terminal.console(), auto_refresh=False) as live:
            while True:
                live.update(_status_renderable(app_state.terminal, snapshot()), refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        return


def _status_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for lst in report["listeners"]:
        state_word = lst["state"] + (f" ({lst['state_reason']})" if lst["state_reason"] else "")
        where = f" on {lst.get('host')} pid {lst.get('pid')}"
        lines.append(
            f"listener {lst['source']}{where}: {state_word}, {lst.get('events', 0)} events,"
            f" {lst.get('delivered', 0)} delivered, {lst.get('failed', 0)} failed,"
            f" {lst.get('muted', 0)} muted, {lst.get('folded', 0)} folded,"
            f" {lst.get('rejected', 0)} rejected (updated {lst['updated'][:19]})"
        )
    for cur in report["cursors"]:
        server = cur.get("server_zone") or cur.get("server_offset")
        seen = f", server time zone {server}" if server else ""
        pages = f", page size {cur['page_size']}" if cur.get("page_size") else ""
        lines.append(
            f"cursor {cur['source']}: at {cur['created']}{seen}{pages}"
            f" (updated {cur['updated'][:19]})"
        )
    for api in report["apis"]:
        state_word = api["state"] + (f" ({api['state_reason']})" if api["state_reason"] else "")
        counts = ", ".join(f"{n} {k}" for k, n in sorted(api.get("requests", {}).items()))
        lines.append(
            f"api {api['url']}: {state_word}, {sum(api.get('requests', {}).values())} requests"
            f"{f' ({counts})' if counts else ''} (updated {api['updated'][:19]})"
        )
    shared = report["backlog"]
    if shared["pending"]:
        lines.append(
            f"backlog: {shared['pending']} pending deliveries, {shared['claimed']} of them"
            " claimed by a listener"
        )
    q = report["queue"]
    if q:
        depth = q["depth"] if q["depth"] is not None else f"unknown ({q['error']})"
        lines.append(
            f"queue {q['name']}: {depth} waiting"
            + (f", {q['consumers']} consumers" if "consumers" in q else "")
        )
    if not lines:
        lines.append("no listener has run with this store yet")
    subs = report["subscriptions"]
    lines.append(f"subscriptions: {subs['enabled']} enabled of {subs['total']}")
    for m in report["mutes"]:
        lines.append(
            f"mute {m['id']}: {_mute_scope(m)} until {m['until']}"
            f" ({_left(m['seconds_left'])} left): {m['reason']}"
        )
    return lines


def _status_rows(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    columns = ["SUBSCRIPTION", "ENDPOINT", "STATE", "OK", "FAILED", "MUTED", "FOLDED", "CONSEC"]
    columns += ["DROPPED", "BACKLOG", "NEXT TRY", "LAST ERROR"]
    rows = []
    for ep in report["endpoints"]:
        if not ep["subscription_enabled"]:
            word = "sub. disabled"
        else:
            word = "enabled" if ep["enabled"] else "switched off"
        rows.append(
            [
                ep["subscription"],
                ep["uri"],
                word,
                ep["total_successes"],
                ep["total_failures"],
                ep["total_muted"],
                ep["total_folded"],
                ep["consecutive_failures"],
                ep["total_dropped"],
                ep["backlog"],
                _clock(ep["next_attempt"], ep["enabled"]),
                ep["pending_error"] or ep["last_error"],
            ]
        )
    return columns, rows


STATUS_OPTIONAL = ["CONSEC", "DROPPED", "FOLDED", "MUTED", "NEXT TRY", "BACKLOG"]


def _status_text(app_state: AppState, report: dict[str, Any]) -> None:
    terminal = app_state.terminal
    for line in _status_lines(report):
        terminal.out(line)
    columns, rows = _status_rows(report)
    if rows:
        terminal.out()
        terminal.table(columns, rows, optional=STATUS_OPTIONAL)


def _watched_text(app_state: AppState, report: dict[str, Any]) -> None:
    """One report of several, a blank line after it."""
    _status_text(app_state, report)
    app_state.terminal.out()


def _status_renderable(terminal: Terminal, report: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.text import Text

    lines = _status_lines(report)
    columns, rows = _status_rows(report)
    # A redrawn display cannot scroll: what does not fit the terminal is summarised, one
    # row per subscription, the troubled ones first, and a last line for the rest.
    room = terminal.console().height - len(lines) - 6
    if len(rows) > room:
        columns, rows, rest = _status_by_subscription(report, max(room - 1, 1))
        if rest:
            lines.append(rest)
    table = terminal.rich_table(columns, rows, optional=STATUS_OPTIONAL)
    return Group(Text("\n".join(lines)), table)


def _status_by_subscription(
    report: dict[str, Any], room: int
) -> tuple[list[str], list[list[Any]], str | None]:
    subs: dict[str, dict[str, Any]] = {}
    for ep in report["endpoints"]:
        empty = {"on": 0, "all": 0, "ok": 0, "failed": 0, "consec": 0}
        row = subs.setdefault(ep["subscription"], {**empty, "enabled": ep["subscription_enabled"]})
        row["all"] += 1
        row["on"] += bool(ep["enabled"])
        row["ok"] += ep["total_successes"]
        row["failed"] += ep["total_failures"]
        row["consec"] = max(row["consec"], ep["consecutive_failures"])
    order = sorted(subs, key=lambda n: (-subs[n]["consec"], subs[n]["on"] - subs[n]["all"], n))
    rows = [
        [name, f"{subs[name]['on']}/{subs[name]['all']}",
         "enabled" if subs[name]["enabled"] else "disabled",
         subs[name]["ok"], subs[name]["failed"], subs[name]["consec"]]
        for name in order[:room]
    ]  # fmt: skip
    hidden = order[room:]
    rest = None
    if hidden:
        failing = sum(1 for n in hidden if subs[n]["consec"])
        rest = (
            f"{len(hidden)} more subscriptions not shown ({failing} of them failing);"
            " 'csnotify status' lists every endpoint"
        )
    columns = ["SUBSCRIPTION", "ENDPOINTS ON", "STATE", "OK", "FAILED", "CONSEC"]
    return columns, rows, rest


@app.command()
def demo(
    ctx: typer.Context,
    duration: float = typer.Option(
        20.0, "--duration", min=1, callback=finite, help="Seconds to run listen for."
    ),
    amqp: str | None = typer.Option(
        None, "--amqp", metavar="URL", help="Use this RabbitMQ (else the API source)."
    ),
    rate: float = typer.Option(
        20.0, "--rate", min=1, callback=finite, help="Simulated events per second."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Everything end to end on this machine, with nothing configured: the CloudStack
    simulator, a webhook receiver that verifies signatures, an SMTP sink, an SMS gateway
    stand-in and an endpoint that always fails, subscribed in a temporary store (VM.* to
    the signed webhook, level ERROR to email, ALERT.* to SMS, * to the failing endpoint).
    A live table shows events, deliveries, latency and the failing endpoint being switched
    off. Nothing is left behind. Alerts come over the event bus only, so the SMS line stays
    at 0 without --amqp.

    \b
    Examples:
      csnotify demo
      csnotify demo --amqp amqp://guest:guest@127.0.0.1:5672/ --duration 30
    """
    import logging

    from csnotify import aio, logs
    from csnotify.demo import run_demo
    from csnotify.servertime import host_zone

    app_state = state(ctx)
    logs.setup(app_state.terminal.stderr, 0, quiet=True)
    logging.getLogger("csnotify").disabled = True  # the table (or progress lines) says what happens
    terminal = app_state.terminal
    zone = host_zone(terminal.environ)
    live: Any = None
    last_line = [0.0]

    def show(d: Any) -> None:
        if live is not None:
            live.update(_demo_table(d), refresh=True)
        elif not as_json and d.elapsed - last_line[0] >= 2:
            last_line[0] = d.elapsed
            delivered = sum(t.delivered for t in d.tallies.values())
            failed = sum(t.failed for t in d.tallies.values())
            off = [t.subscription for t in d.tallies.values() if t.switched_off]
            terminal.out(
                f"{d.elapsed:4.0f}s  events {d.events}  delivered {delivered}  failed {failed}"
                + (f"  switched off: {', '.join(off)}" if off else "")
            )
            terminal.stdout.flush()

    if redrawn(app_state, as_json):
        from rich.live import Live

        with Live(console=terminal.console(), auto_refresh=False, transient=False) as live:
            result = aio.run(run_demo(duration, amqp, rate, show, zone))
            live.update(_demo_table(result), refresh=True)
    else:
        result = aio.run(run_demo(duration, amqp, rate, show, zone))
    render(app_state, result, as_json, lambda app_state, d: _demo_text(app_state, d, live))
    summary = result.as_json()
    ok = (
        summary["received"]["webhooks_with_valid_signature"] > 0
        and not summary["received"]["webhooks_with_invalid_signature"]
    )
    if not ok:
        raise Exit(int(ExitCode.FAILED))


def _demo_text(app_state: AppState, result: Any, live: Any) -> None:
    """The table (unless a live one shows it already), a note, and the summary in words."""
    terminal = app_state.terminal
    summary = result.as_json()
    if live is None and terminal.is_tty:
        terminal.console().print(_demo_table(result))
    if result.note:
        terminal.err(f"csnotify: {result.note}")
    got = summary["received"]
    text = (
        f"demo done ({summary['source']} source, {summary['seconds']} s):"
        f" {summary['events']} events;"
        f" {got['webhooks_with_valid_signature']} signed webhooks verified,"
        f" {got['emails']} emails, {got['sms']} SMS received;"
        f" failing endpoint switched off: {'yes' if _switched(summary) else 'no'}"
    )
    if summary["source"] == "api" and not got["sms"]:
        text += (
            ". No SMS: they go to ALERT.* events, which CloudStack publishes only on its"
            " event bus, not in listEvents; run 'csnotify demo --amqp URL' with a RabbitMQ"
            " to see them."
        )
    terminal.out(terminal.wrap(text))


def _switched(summary: dict[str, Any]) -> bool:
    return any(
        e["switched_off"] for e in summary["endpoints"] if e["subscription"] == "always-failing"
    )


def _demo_table(d: Any) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text(
        f"csnotify demo: {d.source} source, {min(d.elapsed, d.duration):.0f}/{d.duration:.0f} s,"
        f" {d.events} events"
    )
    table = Table(header_style="bold")
    for col, justify in (
        ("SUBSCRIPTION", "left"),
        ("KIND", "left"),
        ("OK", "right"),
        ("FAILED", "right"),
        ("P50", "right"),
        ("STATE", "left"),
    ):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for t in d.tallies.values():
        p50 = f"{t.p50:.1f} ms" if t.p50 is not None else "-"
        table.add_row(
            t.subscription,
            t.kind,
            str(t.delivered),
            str(t.failed),
            p50,
            "switched off" if t.switched_off else "enabled",
        )
    got = d.sinks
    foot = Text(
        f"received: {got.webhooks_verified} signed webhooks verified, {len(got.emails)} emails,"
        f" {len(got.texts)} SMS; failing endpoint refused {got.refused}"
    )
    return Group(head, table, foot)
