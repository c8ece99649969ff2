"""All subscriptions to a file and back: export, import."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.exceptions import Exit

from csnotify.cli.common import (
    EXPORT_FORMATS,
    JSON_OPT,
    AppState,
    CsnotifyGroup,
    app,
    render,
    state,
)
from csnotify.errors import BadInput
from csnotify.exitcodes import ExitCode

if TYPE_CHECKING:
    from csnotify.export import ImportResult


@app.command()
def export(
    ctx: typer.Context,
    fmt: str = typer.Option(
        "json", "--format", metavar="json|toml", help="File format.", autocompletion=EXPORT_FORMATS
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write here instead of stdout."
    ),
    with_secrets: bool = typer.Option(
        False, "--with-secrets", help="Include keys and URI secrets."
    ),
) -> None:
    """Write all subscriptions as JSON or TOML (secrets masked unless --with-secrets).

    \b
    Examples:
      csnotify export > subscriptions.json
      csnotify export --format toml --with-secrets -o /root/csnotify-backup.toml
    """
    from csnotify.export import export_text, write_export

    app_state = state(ctx)
    text = export_text(app_state.store().subscriptions(), fmt.lower(), with_secrets)
    if output is None:
        if with_secrets and (loose := readable_by_others(app_state.terminal.stdout)):
            app_state.terminal.err(
                f"csnotify: warning: stdout is a file others can read ({loose});"
                " its secrets are theirs too: use -o FILE (written 0600)"
            )
        app_state.terminal.stdout.write(text)
    else:
        write_export(output, text)
        app_state.terminal.err(f"wrote {output}")


def readable_by_others(stream: Any) -> str | None:
    """``mode 0644`` when ``stream`` is a regular file group or others may read."""
    import stat

    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # not a file (a test's buffer)
        return None
    if stat.S_ISREG(info.st_mode) and info.st_mode & 0o044:
        return f"mode {info.st_mode & 0o777:04o}"
    return None


@app.command("import")
def import_(
    ctx: typer.Context,
    file: str = typer.Argument(
        ..., metavar="FILE", help="A 'csnotify export' file, or - for stdin."
    ),
    replace: bool = typer.Option(False, "--replace", help="Overwrite subscriptions that differ."),
    allow_commands: bool = typer.Option(
        False,
        "--allow-commands",
        help="Accept new or changed cmd: endpoints (asked on a terminal; refused otherwise).",
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Create subscriptions from an export file (JSON or TOML). Idempotent by name: ones
    that exist are left alone unless --replace. A bad file imports nothing. cmd: endpoints
    the store does not have yet are listed and need --allow-commands (or a yes on a
    terminal): an import must not silently turn a webhook into a program run here.

    \b
    Examples:
      csnotify import subscriptions.json
      ssh listener1 csnotify export --with-secrets | csnotify import - --replace
    """
    from csnotify.export import CommandsNeedApproval, import_entries, parse_text

    app_state = state(ctx)
    text = app_state.terminal.read_text(file, "; is it a 'csnotify export' file?")
    source = "stdin" if file == "-" else file
    entries = list(app_state.terminal.progress(parse_text(text, source), None, "checking"))
    store = app_state.store()
    try:
        result = import_entries(store, entries, source, replace, allow_commands)
    except CommandsNeedApproval as exc:
        if file == "-" or not app_state.terminal.stdin_is_tty:
            raise
        for command in exc.commands:
            app_state.terminal.err(f"new program: {command}")
        if not app_state.terminal.confirm(
            "Run these programs for the events they match?", err=True
        ):
            raise Exit(int(ExitCode.USAGE)) from None
        result = import_entries(store, entries, source, replace, allow_commands=True)
    render(app_state, result, as_json, _imported_text)


def _imported_text(app_state: AppState, result: ImportResult) -> None:
    for word, names in result.as_json().items():
        if names:
            app_state.say(f"{word}: {', '.join(names)}")
    if result.skipped:
        app_state.terminal.err("skipped ones exist with other settings; use --replace to overwrite")


store_app = typer.Typer(
    cls=CsnotifyGroup,
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Move the store (store copy).",
)
app.add_typer(store_app, name="store")


@store_app.command("copy")
def store_copy(
    ctx: typer.Context,
    to: str = typer.Option(
        ...,
        "--to",
        metavar="URL",
        help="The store to fill: mysql://USER:PASSWORD@HOST:3306/DB, postgresql://..., a"
        " file; - reads it from stdin (keeps the password out of the process list).",
    ),
    replace: bool = typer.Option(
        False, "--replace", help="Overwrite a target that already holds a store."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Copy the whole store (--db) into another one, usually a MariaDB/MySQL or PostgreSQL
    database that several listeners then share: subscriptions, endpoints with their
    counters, mutes, pending deliveries and digests, the delivery log, cursors, seen event
    ids and the API's tokens; not which processes used the source, so status on the
    target shows only those that use it. The target is migrated first and written in one
    transaction; one that holds anything is refused without --replace. Stop the listeners
    of the source first (deliveries they hold are copied as unclaimed, for the new
    listeners).

    \b
    Examples:
      csnotify store copy --to postgresql://csnotify:PASSWORD@db.example:5432/csnotify
      printf '%s' "$URL" | csnotify store copy --to -
    """
    from csnotify.store import open_store
    from csnotify.storecopy import copy_store

    app_state = state(ctx)
    if to == "-":
        lines = [ln.strip() for ln in app_state.terminal.text_input().read().splitlines()]
        given = [ln for ln in lines if ln]
        if len(given) != 1:
            got = "nothing" if not given else f"{len(given)} lines"
            raise BadInput(f"--to -: give the target's URL on one line of stdin (got {got})")
        to = given[0]
    if not to.strip():
        raise BadInput("--to: give the target store: a mysql:// or postgresql:// URL, or a file")
    source = app_state.store()
    target = open_store(to, {}, what="--to")
    try:
        copied = copy_store(source, target, replace)
    finally:
        target.close()
    result = {"from": source.location, "to": target.location, "copied": copied}
    render(app_state, result, as_json, _copied_text)


def _copied_text(app_state: AppState, result: dict[str, Any]) -> None:
    shown = ", ".join(f"{n} {table}" for table, n in result["copied"].items() if n)
    app_state.terminal.out(f"copied {result['from']} to {result['to']}: {shown or 'nothing'}")
