"""Delivering events and looking at deliveries: dispatch, test, verify (for receivers),
deliveries."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.exceptions import Exit

from csnotify.cli.common import (
    JSON_OPT,
    NAME_ARG,
    VERIFY_SCHEMES,
    AppState,
    _delivery_settings,
    app,
    complete_names,
    given,
    render,
    state,
)
from csnotify.errors import BadInput
from csnotify.exitcodes import ExitCode

if TYPE_CHECKING:
    from csnotify.dispatch import DispatchResult


@app.command()
def dispatch(
    ctx: typer.Context,
    file: str = typer.Argument("-", metavar="[FILE|-]", help="Events to deliver (default stdin)."),
    routing_key: str | None = typer.Option(
        None, "--routing-key", metavar="KEY", help="Routing key of event-bus bodies without one."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Deliver the events in FILE (or stdin) once, then print a summary.

    Accepts JSON lines, a JSON array, a listEvents response (listeventsresponse, or its
    inner {"count": N, "event": [...]} as cmk -o json and cs print it), our own
    or CloudEvents JSON, and CloudStack event-bus message bodies. A bad line is reported
    as 'line N: reason' and skipped; the others are delivered. The exit status is 1 when
    a line was skipped or a delivery failed. Events held back by a rate limit or
    --group-wait go out (as one message) before it exits, which can take up to a minute.
    A delivery whose next retry is more than 10 s away stays in the store ('waiting'); the
    next listen or dispatch makes it.

    \b
    Examples:
      csnotify dispatch events.jsonl
      cmk -o json list events listall=true | csnotify dispatch -
      csnotify dispatch body.json --routing-key \\
          management-server.ActionEvent.VM-START.VirtualMachine.c3b1f2e4-6a7d-4e89-9b0a-1f2e3d4c5b6a
    """
    from csnotify import aio
    from csnotify.dispatch import dispatch_stream
    from csnotify.events import parse_stream

    app_state = state(ctx)
    settings = _delivery_settings(app_state)
    text = app_state.terminal.read_text(file)
    store = app_state.store()
    lines = sum(1 for line in text.splitlines() if line.strip())
    items = app_state.terminal.progress(
        parse_stream(text, routing_key), lines if lines > 1 else None, "dispatching"
    )
    result = aio.run(
        dispatch_stream(
            store,
            settings,
            items,
            on_rejected=lambda r: app_state.terminal.err(f"csnotify: {r}"),
        )
    )
    render(app_state, result, as_json, _dispatched_text)
    if result.rejected or result.stats.failed:
        raise Exit(int(ExitCode.FAILED))


def _dispatched_text(app_state: AppState, result: DispatchResult) -> None:
    summary = result.as_json()
    app_state.say(
        f"read {summary['read']}: {summary['events']} events, {summary['matched']} matched;"
        f" {summary['delivered']} delivered, {summary['failed']} failed,"
        f" {summary['skipped']} skipped"
        + "".join(
            f", {summary[k]} {k}" for k in ("muted", "folded", "dropped", "waiting") if summary[k]
        )
    )
    for label in summary["switched_off"]:
        app_state.terminal.err(f"csnotify: switched off {label} (see 'csnotify show')")


@app.command("test")
def test_(
    ctx: typer.Context,
    name: str = NAME_ARG,
    as_json: bool = JSON_OPT,
) -> None:
    """Send a synthetic event to each endpoint of a subscription now and show how each
    fared (one attempt, nothing counted). Exit status 1 if any failed.

    \b
    Example:
      csnotify test vm-to-hooks
    """
    from csnotify import aio
    from csnotify.dispatch import test_endpoints
    from csnotify.subscriptions import find

    app_state = state(ctx)
    settings = _delivery_settings(app_state)
    sub = find(app_state.store(), name)
    results = aio.run(test_endpoints(sub, settings))
    render(app_state, [r.as_json() for r in results], as_json, _tested_text)
    if not all(r.ok for r in results):
        raise Exit(int(ExitCode.FAILED))


def _tested_text(app_state: AppState, results: list[dict[str, Any]]) -> None:
    rows = [
        [r["endpoint"], r["kind"], "ok" if r["ok"] else "FAILED", f"{r['latency_ms']:.0f} ms",
         r["status"], r["error"]]
        for r in results
    ]  # fmt: skip
    app_state.terminal.table(["ENDPOINT", "KIND", "RESULT", "LATENCY", "STATUS", "ERROR"], rows)


@app.command()
def verify(
    ctx: typer.Context,
    body_file: str = typer.Argument("-", metavar="[BODY|-]", help="Request body (default stdin)."),
    key: str | None = typer.Option(
        None,
        "--key",
        envvar="CSNOTIFY_VERIFY_KEY",
        help="The subscription's key (whsec_... or plain); better --key-file or the variable.",
    ),
    key_file: Path | None = typer.Option(
        None, "--key-file", metavar="FILE", help="Read the key from FILE (keeps it out of ps)."
    ),
    header: list[str] = typer.Option([], "--header", "-H", metavar="'NAME: VALUE'"),
    headers_file: Path | None = typer.Option(
        None, "--headers", metavar="FILE", help="File of 'Name: value' lines."
    ),
    tolerance: float = typer.Option(
        300, "--tolerance", help="Max age of webhook-timestamp, s (0: any)."
    ),
    scheme: str = typer.Option(
        "standard",
        "--scheme",
        metavar="standard|cloudstack",
        help="Standard Webhooks, or CloudStack's X-CS-Signature (checked only when asked).",
        autocompletion=VERIFY_SCHEMES,
    ),
    seen: Path | None = typer.Option(
        None,
        "--seen",
        metavar="FILE",
        help="Refuse a webhook-id already verified; ids are recorded in FILE.",
    ),
) -> None:
    """For receivers: check the signature of a delivery (Standard Webhooks, or CloudStack's
    X-CS-Signature with --scheme cloudstack). Exit status 0 if it is valid, 1 if not, 2 if
    the key cannot verify anything (empty, malformed).

    \b
    Examples:
      csnotify verify --key-file /etc/hook.key --headers headers.txt body.json
      CSNOTIFY_VERIFY_KEY=whsec_... csnotify verify --seen /var/lib/hook/seen \\
          -H "webhook-id: msg_1" -H "webhook-timestamp: 1732530000" \\
          -H "webhook-signature: v1,..." < body.json
    """
    from csnotify.signing import SignatureMismatch, parse_header_lines, remember_id
    from csnotify.signing import verify as check

    app_state = state(ctx)
    key = _verify_key(given(ctx, "key", key, "CSNOTIFY_VERIFY_KEY"), key_file)
    if seen is not None and scheme == "cloudstack":
        raise BadInput(
            "--seen needs Standard Webhooks deliveries: X-CS-Signature signs no id or time,"
            " so a replay cannot be told from a new delivery; drop --seen or --scheme cloudstack"
        )
    headers = parse_header_lines("\n".join(header), strict=True)
    if headers_file is not None:
        try:  # bytes that are not UTF-8 are kept (as surrogates): a header holding them fails
            text = headers_file.read_bytes().decode("utf-8", "surrogateescape")
            headers = {**parse_header_lines(text), **headers}
        except OSError as exc:
            raise BadInput(f"cannot read {headers_file}: {exc.strerror}") from None
    body = app_state.terminal.read_bytes(body_file)
    try:
        result = check(key, headers, body, tolerance, scheme=scheme)
        if seen is not None:
            remember_id(seen, result, tolerance)
    except SignatureMismatch as exc:
        app_state.terminal.err(f"csnotify: invalid: {exc.reason}")
        raise Exit(int(ExitCode.FAILED)) from None
    app_state.say(
        f"valid {result.scheme} signature" + (f" (id {result.msg_id})" if result.msg_id else "")
    )


def _verify_key(key: str | None, key_file: Path | None) -> str:
    if key is not None and key_file is not None:
        raise BadInput("give --key or --key-file, not both")
    if key_file is not None:
        try:
            return key_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"cannot read --key-file {key_file}: {exc}") from None
    if key is None:
        raise BadInput("give the key: --key-file FILE, CSNOTIFY_VERIFY_KEY, or --key")
    return key


@app.command()
def deliveries(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, metavar="[NAME]", autocompletion=complete_names),
    failed: bool = typer.Option(False, "--failed", help="Only failed deliveries."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="How many, newest first."),
    as_json: bool = JSON_OPT,
) -> None:
    """Show the recent-delivery log (the last deliveries kept per endpoint), newest first.

    \b
    Examples:
      csnotify deliveries
      csnotify deliveries vm-to-hooks --failed --json
    """
    from csnotify.store import DeliveryLog
    from csnotify.subscriptions import find

    app_state = state(ctx)
    store = app_state.store()
    if name is not None:
        find(store, name)
    render(app_state, DeliveryLog(store).rows(name, failed, limit), as_json, _deliveries_text)


def _deliveries_text(app_state: AppState, rows: list[dict[str, Any]]) -> None:
    if not rows:
        app_state.terminal.err("no deliveries recorded")
        return
    table = [
        [
            r["at"][5:19].replace("T", " "),  # MM-DD HH:MM:SS UTC; --json has the whole time
            r["subscription"],
            r["endpoint"],
            r["event_type"],
            r["status"],
            r["attempts"],
            r["http_status"],
            f"{r['latency_ms']:.0f} ms" if r["latency_ms"] is not None else None,
            r["error"],
        ]
        for r in rows
    ]
    columns = [
        "TIME",
        "SUBSCRIPTION",
        "ENDPOINT",
        "EVENT",
        "STATUS",
        "TRIES",
        "HTTP",
        "LATENCY",
        "ERROR",
    ]
    # At 80 columns the subscription and the time stay whole; the endpoint goes first
    app_state.terminal.table(
        columns,
        table,
        optional=["ENDPOINT", "LATENCY", "HTTP", "TRIES"],
        whole=["TIME", "SUBSCRIPTION"],
    )
