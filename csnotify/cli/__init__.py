"""The command line: parse, call the core, render. Nothing else lives here.

Heavy modules (apprise, httpx, aio-pika, rich tables) are imported inside the commands
that need them so that ``csnotify --help`` and ``csnotify list`` start fast.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit, TyperException

from csnotify import __version__
from csnotify.errors import BadInput, CsnotifyError
from csnotify.exitcodes import ExitCode
from csnotify.output import Terminal

if TYPE_CHECKING:
    from csnotify.config import Settings
    from csnotify.models import Subscription
    from csnotify.store import Store


class OneLineUsageError(UsageError):
    """Click's usage errors shown as ours are: one line, what was wrong and where to look."""

    def show(self, file: Any = None) -> None:
        where = self.ctx.command_path if self.ctx is not None else "csnotify"
        message = " ".join(self.format_message().split()).rstrip(".")
        message = message.replace(". Did you mean", "; did you mean")
        if message[1:2].islower():
            message = message[:1].lower() + message[1:]
        (file or sys.stderr).write(f"csnotify: error: {message} (see '{where} --help')\n")


def _one_line(exc: UsageError) -> UsageError:
    if isinstance(exc, NoArgsIsHelpError | OneLineUsageError):  # help shown on purpose
        return exc
    return OneLineUsageError(exc.format_message(), exc.ctx)


class CsnotifyGroup(TyperGroup):
    """Turns our errors into one line on stderr and their exit status."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            raise _one_line(exc) from None
        except (TyperException, Exit, Abort):
            raise
        except BrokenPipeError:  # `csnotify list | head -1`: the reader is done, so are we
            stdout_gone()
            raise Exit(int(ExitCode.READER_GONE)) from None
        except CsnotifyError as exc:
            _fail(ctx, exc.message, exc.exit_code, exc)
        except KeyboardInterrupt:
            _fail(ctx, "interrupted", 130, None)
        except Exception as exc:  # noqa: BLE001 - last resort: one line, not a traceback
            _fail(
                ctx,
                f"internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)",
                ExitCode.FAILED,
                exc,
            )


def stdout_gone() -> None:
    """The reader of our output went away (``csnotify list | head -1``): point stdout at
    /dev/null so that nothing more, not even Python's last flush, fails on it."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _fail(ctx: typer.Context, message: str, code: int, exc: BaseException | None) -> NoReturn:
    state = ctx.obj if isinstance(ctx.obj, AppState) else None
    terminal = state.terminal if state else Terminal()
    if exc is not None and state is not None and state.verbose:
        import traceback

        terminal.err("".join(traceback.format_exception(exc)).rstrip())
    terminal.err(f"csnotify: error: {message}")
    raise Exit(int(code))


app = typer.Typer(
    name="csnotify",
    cls=CsnotifyGroup,
    rich_markup_mode=None,  # plain click help: about half the start-up time of rich help
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    help="""Event publish/subscribe for Apache CloudStack.

Subscribe endpoints (signed webhooks, email, SMS, local commands, any Apprise service)
to CloudStack event types; 'csnotify listen' takes each event off CloudStack's API or
RabbitMQ event bus and delivers it to everyone interested.

\b
Examples:
  csnotify subscribe 'VM.*' --to https://hooks.example/cs --key generate
  csnotify subscribe '*' --level ERROR --to 'mailto://u:p@smtp.example?to=ops@example'
  csnotify list
""",
)
config_app = typer.Typer(
    cls=CsnotifyGroup,
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Show and change settings (config show, config set, config import-cmk).",
)
app.add_typer(config_app, name="config")


@dataclass
class AppState:
    terminal: Terminal
    db: Path | None
    config: Path | None
    overrides: list[str] = field(default_factory=list)
    verbose: int = 0
    quiet: bool = False
    _store: Store | None = None

    def store(self) -> Store:
        if self._store is None:
            from csnotify.store import Store, db_path

            self._store = Store.open(db_path(self.db, os.environ))
        return self._store

    def config_path(self) -> Path:
        from csnotify.config import config_path

        return config_path(self.config, os.environ)

    def settings(self) -> Settings:
        from csnotify import config

        loaded = config.load(self.config_path(), os.environ, config.parse_overrides(self.overrides))
        for warning in loaded.warnings:
            self.terminal.err(f"csnotify: warning: {warning}")
        return loaded

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def say(self, text: str) -> None:
        """A confirmation for people; silenced by -q."""
        if not self.quiet:
            self.terminal.out(text)


def state(ctx: typer.Context) -> AppState:
    return ctx.find_root().obj  # type: ignore[no-any-return]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"csnotify {__version__}")
        raise Exit(0)


OVERVIEW = f"""csnotify {__version__} - event publish/subscribe for Apache CloudStack

  csnotify subscribe 'VM.*' --to https://hooks.example/cs --key generate
  csnotify list                      subscriptions and their endpoints
  csnotify config import-cmk         take the API keys from CloudMonkey

Run 'csnotify --help' for all commands, 'csnotify COMMAND --help' for one.
"""


@app.callback(invoke_without_command=True)
def main_options(
    ctx: typer.Context,
    db: Path | None = typer.Option(
        None, "--db", envvar="CSNOTIFY_DB", help="Store file.", show_default=False
    ),
    config: Path | None = typer.Option(
        None, "--config", envvar="CSNOTIFY_CONFIG", help="Config file (TOML)."
    ),
    option: list[str] = typer.Option(
        [], "-c", metavar="KEY=VALUE", help="Override a setting for this run (repeatable)."
    ),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, help="More detail."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only errors and data."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    ctx.obj = AppState(
        terminal=Terminal(), db=db, config=config, overrides=option, verbose=verbose, quiet=quiet
    )
    ctx.call_on_close(ctx.obj.close)
    if ctx.invoked_subcommand is None:
        ctx.obj.terminal.out(OVERVIEW.rstrip())


def _query_store(ctx: typer.Context, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Rows for shell completion, read-only from the store if it exists (else none)."""
    import sqlite3

    from csnotify.store import db_path

    path = db_path(ctx.find_root().params.get("db"), os.environ)
    if not path.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        rows = conn.execute(sql, params).fetchall()
        conn.close()
    except sqlite3.Error:
        return []
    return rows


def complete_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Subscription names for shell completion."""
    rows = _query_store(ctx, "SELECT name FROM subscriptions ORDER BY name")
    return [r[0] for r in rows if r[0].startswith(incomplete)]


def complete_endpoints(ctx: typer.Context, incomplete: str) -> list[str]:
    """Endpoints of the subscription named on the line (of all, without a name), in the
    masked form that list shows and --endpoint accepts: completion never shows secrets."""
    from csnotify.redact import mask_uri

    # While an option's value is completed, click leaves the arguments before it unparsed.
    name = ctx.params.get("name") or next((a for a in ctx.args if not a.startswith("-")), None)
    rows = _query_store(
        ctx,
        "SELECT e.uri FROM endpoints e JOIN subscriptions s ON s.id = e.subscription_id"
        " WHERE ? IS NULL OR s.name = ? ORDER BY s.name, e.position",
        (name, name),
    )
    shown = dict.fromkeys(mask_uri(r[0]) for r in rows)
    return [uri for uri in shown if uri.startswith(incomplete)]


def complete_mute_ids(ctx: typer.Context, incomplete: str) -> list[str]:
    """Ids of the mutes in force."""
    from csnotify.events import now_iso

    rows = _query_store(ctx, "SELECT id FROM mutes WHERE until > ? ORDER BY id", (now_iso(),))
    return [str(r[0]) for r in rows if str(r[0]).startswith(incomplete)]


def complete_setting_keys(incomplete: str) -> list[str]:
    from csnotify.config import SETTINGS

    return [key for key in SETTINGS if key.startswith(incomplete)]


def choices(*values: str) -> Any:
    """Completion of a fixed set of values (levels, formats, sources, shells)."""

    def complete(incomplete: str) -> list[str]:
        return [v for v in values if v.startswith(incomplete)]

    return complete


LEVELS = choices("INFO", "WARN", "ERROR")
WEBHOOK_FORMATS = choices("json", "cloudevents", "cloudstack")
EXPORT_FORMATS = choices("json", "toml")
SOURCE_NAMES = choices("api", "amqp", "stdin")


def secret_value(value: str | None, terminal: Terminal, what: str) -> str | None:
    """``-`` reads a secret from stdin (a hidden prompt on a terminal), so that it stays out
    of shell history and ps."""
    if value != "-":
        return value
    if terminal.stdin_is_tty:
        import getpass

        return getpass.getpass(f"{what}: ")
    text = terminal.stdin.readline().rstrip("\r\n")
    if not text:
        raise BadInput(f"{what}: nothing on stdin")
    return text


NAME_ARG = typer.Argument(
    ..., metavar="NAME", help="Subscription name.", autocompletion=complete_names
)
JSON_OPT = typer.Option(False, "--json", help="Print JSON on stdout and nothing else.")
MAX_PER_MINUTE_OPT = typer.Option(
    None,
    "--max-per-minute",
    metavar="N|default",
    help="Rate limit per endpoint; the excess goes out as one digest (0: none).",
)
STRICT_ORDER_OPT = typer.Option(
    None,
    "--strict-order/--per-resource-order",
    help="One delivery at a time, in the order events were accepted (default: events of"
    " one resource in order, different resources in parallel).",
    show_default=False,
)
GROUP_WAIT_OPT = typer.Option(
    None,
    "--group-wait",
    metavar="DURATION",
    help="Collect events this long (e.g. 30s) into one message to human endpoints (0: off).",
)


# -- subscriptions -------------------------------------------------------------------


@app.command()
def subscribe(
    ctx: typer.Context,
    patterns: list[str] = typer.Argument(
        ..., metavar="PATTERN...", help="Event-type globs, e.g. 'VM.*' '*.CREATE' '*'."
    ),
    to: list[str] = typer.Option(
        ...,
        "--to",
        metavar="URI",
        help="Endpoint: https://..., cmd:PROGRAM ARGS, or an Apprise URI.",
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

    \b
    Examples:
      csnotify subscribe 'VM.*' --to https://hooks.example/cs --key generate
      csnotify subscribe '*' --level ERROR --name oncall --group-wait 30s \\
          --to 'mailto://user:pass@smtp.example?to=oncall@example'
      csnotify subscribe VM.START VM.STOP --to 'cmd:/usr/local/bin/dns-update' \\
          --where account=admin --where 'resource_name~^web-'
    """
    from csnotify import subscriptions

    app_state = state(ctx)
    key = secret_value(key, app_state.terminal, "signing key")
    spec = subscriptions.SubscriptionInput(
        patterns=patterns,
        to=to,
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
    )
    created = subscriptions.subscribe(app_state.store(), spec, enabled=not disabled)
    sub = created.subscription
    _warn_group_wait(app_state, sub)
    if as_json:
        data = sub.as_json()
        if created.generated_key:
            data["generated_key"] = created.generated_key
        app_state.terminal.json(data)
        return
    state_word = "" if sub.enabled else " (disabled)"
    app_state.say(
        f"created subscription {sub.name}{state_word}: {' '.join(sub.patterns)}"
        f" -> {len(sub.endpoints)} endpoint(s)"
    )
    if created.generated_key:
        app_state.terminal.out(f"signing key (shown once, keep it): {created.generated_key}")


def _warn_group_wait(app_state: AppState, sub: Subscription) -> None:
    from csnotify.models import APPRISE

    if sub.group_wait and not any(ep.kind == APPRISE for ep in sub.endpoints):
        app_state.terminal.err(
            f"csnotify: note: --group-wait applies to email, SMS and chat endpoints;"
            f" {sub.name} has none, so its events are sent one by one"
        )


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
    from csnotify.subscriptions import summary

    app_state = state(ctx)
    store = app_state.store()
    subs = store.subscriptions()
    if as_json:
        app_state.terminal.json(subscription_docs(store, subs, reveal))
        return
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
    ]
    app_state.terminal.table(columns, rows, optional=["PATTERNS", "LAST OK", "LAST ERROR"])


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
    terminal.fields(pairs)
    terminal.out()
    columns = ["ENDPOINT", "KIND", "STATE", "LIMIT", "CONSEC", "FAILED", "OK", "MUTED", "FOLDED"]
    columns += ["BACKLOG", "NEXT TRY", "LAST OK", "LAST ERROR"]
    rows = []
    for ep, ep_obj in zip(data["endpoints"], sub.endpoints, strict=True):
        ep_state = "enabled" if ep["enabled"] else f"disabled: {ep['disabled_reason'] or '-'}"
        if ep["strict_order"]:
            ep_state += ", strict order"
        last_error = f"{ep['last_error_at']} {ep['last_error']}" if ep["last_error"] else None
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
                ep["backlog"],
                _clock(ep["next_attempt"]),
                ep["last_success_at"],
                last_error,
            ]
        )
    optional = ["KIND", "CONSEC", "LAST OK", "MUTED", "FOLDED", "LIMIT", "NEXT TRY", "BACKLOG"]
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
    if as_json:
        app_state.terminal.json(data)
    else:
        human_default = app_state.settings()["delivery.human_max_per_minute"]
        _render_subscription(app_state.terminal, sub, data, human_default)


@app.command()
def update(
    ctx: typer.Context,
    name: str = NAME_ARG,
    pattern: list[str] = typer.Option([], "--pattern", help="Replace the patterns (repeatable)."),
    to: list[str] = typer.Option(
        [], "--to", metavar="URI", help="Replace the endpoints (repeatable)."
    ),
    add_to: list[str] = typer.Option([], "--add-to", metavar="URI", help="Add an endpoint."),
    remove_to: list[str] = typer.Option(
        [], "--remove-to", metavar="URI", help="Remove an endpoint."
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
    app_state = state(ctx)
    key = secret_value(key, app_state.terminal, "signing key")
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
    if as_json:
        data = result.subscription.as_json()
        if result.generated_key:
            data["generated_key"] = result.generated_key
        app_state.terminal.json(data)
        return
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
        and not typer.confirm(f"Delete subscription {sub.name} ({len(sub.endpoints)} endpoint(s))?")
    ):
        raise Exit(int(ExitCode.FAILED))
    subscriptions.unsubscribe(store, sub.name, expected_id=sub.id)
    app_state.say(f"deleted subscription {sub.name}")


def _switch(ctx: typer.Context, name: str, endpoint: str | None, enabled: bool) -> None:
    from csnotify import subscriptions
    from csnotify.redact import mask_uri

    app_state = state(ctx)
    sub = subscriptions.set_enabled(app_state.store(), name, enabled, endpoint)
    what = f"endpoint {sub.endpoint(endpoint).uri} of {sub.name}" if endpoint else sub.name
    app_state.say(f"{'enabled' if enabled else 'disabled'} {mask_uri(what)}")


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
        app_state.terminal.stdout.write(text)
    else:
        write_export(output, text)
        app_state.terminal.err(f"wrote {output}")


@app.command("import")
def import_(
    ctx: typer.Context,
    file: str = typer.Argument(
        ..., metavar="FILE", help="A 'csnotify export' file, or - for stdin."
    ),
    replace: bool = typer.Option(False, "--replace", help="Overwrite subscriptions that differ."),
    as_json: bool = JSON_OPT,
) -> None:
    """Create subscriptions from an export file (JSON or TOML). Idempotent by name: ones
    that exist are left alone unless --replace. A bad file imports nothing.

    \b
    Examples:
      csnotify import subscriptions.json
      ssh listener1 csnotify export --with-secrets | csnotify import - --replace
    """
    from csnotify.export import import_entries, parse_text

    app_state = state(ctx)
    if file == "-":
        text, source = app_state.terminal.text_input().read(), "stdin"
    else:
        try:
            text, source = Path(file).read_text(encoding="utf-8"), file
        except OSError as exc:
            raise BadInput(f"cannot read {file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise BadInput(f"{file} is not UTF-8 text; is it a 'csnotify export' file?") from None
    entries = list(app_state.terminal.progress(parse_text(text, source), None, "checking"))
    result = import_entries(app_state.store(), entries, source, replace)
    if as_json:
        app_state.terminal.json(result.as_json())
        return
    for word, names in result.as_json().items():
        if names:
            app_state.say(f"{word}: {', '.join(names)}")
    if result.skipped:
        app_state.terminal.err("skipped ones exist with other settings; use --replace to overwrite")


# -- delivery ------------------------------------------------------------------------


def _read_input(app_state: AppState, file: str) -> str:
    if file == "-":
        return app_state.terminal.text_input().read()
    try:
        return Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{file} is not UTF-8 text") from None


def _delivery_settings(app_state: AppState) -> Any:
    from csnotify import logs
    from csnotify.delivery.settings import DeliverySettings

    logs.setup(app_state.verbose, app_state.quiet)
    return DeliverySettings.from_settings(app_state.settings())


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

    Accepts JSON lines, a JSON array, a listEvents response (listeventsresponse), our own
    or CloudEvents JSON, and CloudStack event-bus message bodies. A bad line is reported
    as 'line N: reason' and skipped; the others are delivered. The exit status is 1 when
    a line was skipped or a delivery failed.
    Events held back by a rate limit or --group-wait go out (as one message) before it
    exits, which can take up to a minute. A delivery whose next retry is more than 10 s
    away stays in the store ('waiting'); the next listen or dispatch makes it. The exit
    status is 1 if a line was skipped or a delivery failed.

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
    text = _read_input(app_state, file)
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
    summary = result.as_json()
    if as_json:
        app_state.terminal.json(summary)
    else:
        app_state.say(
            f"read {summary['read']}: {summary['events']} events, {summary['matched']} matched;"
            f" {summary['delivered']} delivered, {summary['failed']} failed,"
            f" {summary['skipped']} skipped"
            + "".join(
                f", {summary[k]} {k}"
                for k in ("muted", "folded", "dropped", "waiting")
                if summary[k]
            )
        )
        for label in summary["switched_off"]:
            app_state.terminal.err(f"csnotify: switched off {label} (see 'csnotify show')")
    if result.rejected or summary["failed"]:
        raise Exit(int(ExitCode.FAILED))


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
    if as_json:
        app_state.terminal.json([r.as_json() for r in results])
    else:
        rows = [
            [r.uri, r.kind, "ok" if r.ok else "FAILED", f"{r.latency_ms:.0f} ms", r.status, r.error]
            for r in results
        ]
        app_state.terminal.table(["ENDPOINT", "KIND", "RESULT", "LATENCY", "STATUS", "ERROR"], rows)
    if not all(r.ok for r in results):
        raise Exit(int(ExitCode.FAILED))


@app.command()
def verify(
    ctx: typer.Context,
    body_file: str = typer.Argument("-", metavar="[BODY|-]", help="Request body (default stdin)."),
    key: str = typer.Option(
        ...,
        "--key",
        envvar="CSNOTIFY_VERIFY_KEY",
        help="The subscription's key (whsec_... or plain).",
    ),
    header: list[str] = typer.Option([], "--header", "-H", metavar="'NAME: VALUE'"),
    headers_file: Path | None = typer.Option(
        None, "--headers", metavar="FILE", help="File of 'Name: value' lines."
    ),
    tolerance: float = typer.Option(
        300, "--tolerance", help="Max age of webhook-timestamp, s (0: any)."
    ),
) -> None:
    """For receivers: check the signature of a delivery (Standard Webhooks, or CloudStack's
    X-CS-Signature). Exit status 0 if it is valid, 1 if not.

    \b
    Examples:
      csnotify verify --key whsec_... --headers headers.txt body.json
      csnotify verify --key "$KEY" -H "webhook-id: msg_1" -H "webhook-timestamp: 1732530000" \\
          -H "webhook-signature: v1,..." < body.json
    """
    from csnotify.signing import SignatureMismatch, parse_header_lines
    from csnotify.signing import verify as check

    app_state = state(ctx)
    headers = parse_header_lines("\n".join(header))
    if headers_file is not None:
        try:
            headers = {**parse_header_lines(headers_file.read_text()), **headers}
        except OSError as exc:
            raise BadInput(f"cannot read {headers_file}: {exc.strerror}") from None
    if body_file == "-":
        body = (
            sys.stdin.buffer.read()
            if app_state.terminal.stdin is sys.stdin
            else (app_state.terminal.stdin.read().encode())
        )
    else:
        try:
            body = Path(body_file).read_bytes()
        except OSError as exc:
            raise BadInput(f"cannot read {body_file}: {exc.strerror}") from None
    try:
        result = check(key, headers, body, tolerance)
    except SignatureMismatch as exc:
        app_state.terminal.err(f"csnotify: invalid: {exc.reason}")
        raise Exit(int(ExitCode.FAILED)) from None
    app_state.say(
        f"valid {result.scheme} signature" + (f" (id {result.msg_id})" if result.msg_id else "")
    )


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
    rows = DeliveryLog(store).rows(name, failed, limit)
    if as_json:
        app_state.terminal.json(rows)
        return
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
    from csnotify.events import Event, now_iso, parse_stream
    from csnotify.matching import FILTER_FIELDS, explain, parse_level
    from csnotify.mutes import MuteSet
    from csnotify.redact import mask_uri

    app_state = state(ctx)
    if event_file is not None:
        if event_type is not None:
            raise BadInput("give TYPE or --event FILE, not both")
        text = _read_input(app_state, str(event_file))
        first = next(iter(parse_stream(text)), None)
        if not isinstance(first, Event):
            raise BadInput(
                f"{event_file}: {first if first is not None else 'no event in the file'}"
            )
        event = first
    else:
        if not event_type:
            raise BadInput("give an event TYPE (e.g. VM.START) or --event FILE")
        fields: dict[str, str] = {}
        for item in where:
            name, sep, value = item.partition("=")
            if not sep or name not in FILTER_FIELDS:
                raise BadInput(
                    f"--where {item!r}: use FIELD=VALUE with one of {', '.join(FILTER_FIELDS)}"
                )
            fields[name] = value
        event = Event(
            id="csnotify-match",
            type=event_type,
            level=parse_level(level),
            created=now_iso(),
            source="match",
            **fields,  # type: ignore[arg-type]
        )
    store = app_state.store()
    subs = store.subscriptions()
    mutes = MuteSet(store.mutes())
    verdicts = []
    for sub in subs:
        verdict = explain(sub, event).as_json()
        verdict["endpoints"] = []
        for ep in sub.endpoints if verdict["matched"] else []:
            mute = mutes.find(sub.name, ep.uri, event.type)
            muted = f"mute {mute.id} until {mute.until}: {mute.reason}" if mute else None
            verdict["endpoints"].append(
                {"uri": mask_uri(ep.uri), "enabled": ep.enabled, "muted": muted}
            )
        verdicts.append(verdict)
    if as_json:
        app_state.terminal.json({"event": event.fields(), "subscriptions": verdicts})
        return
    if not subs:
        app_state.terminal.err("no subscriptions yet; create one with 'csnotify subscribe'")
        return
    for v in verdicts:
        mark = "reaches" if v["matched"] else "skips  "
        app_state.terminal.out(f"{mark} {v['subscription']}: {v['reason']}")
        for ep in v["endpoints"]:
            state_word = "" if ep["enabled"] else " (endpoint switched off: not sent)"
            if ep["enabled"] and ep["muted"]:
                state_word = f" (muted, not sent: {ep['muted']})"
            app_state.terminal.out(f"          -> {ep['uri']}{state_word}")


# -- operator control: mutes and redeliver -------------------------------------------


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
    made = make(app_state.store(), spec).as_json()
    if as_json:
        app_state.terminal.json(made)
        return
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
    rows = [m.as_json() for m in found]
    if as_json:
        app_state.terminal.json(rows)
        return
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
    from csnotify.events import parse_since
    from csnotify.store import log_time
    from csnotify.subscriptions import find

    app_state = state(ctx)
    settings = _delivery_settings(app_state)
    store = app_state.store()
    sub = find(store, name)
    if not sub.enabled:
        raise BadInput(f"subscription {sub.name} is disabled; run 'csnotify enable {sub.name}'")
    endpoints = sub.endpoints
    if endpoint is not None:
        ep = sub.endpoint(endpoint)
        if not ep.enabled:
            raise BadInput(
                f"endpoint {_masked(ep.uri)} is switched off; run 'csnotify enable {sub.name}"
                f" --endpoint {_masked(ep.uri)}' first"
            )
        endpoints = [ep]
    start = log_time(parse_since(since)) if since else None
    end = log_time(parse_since(until)) if until else None
    if start and end and start > end:
        raise BadInput("--since is after --until; swap them")
    result = aio.run(resend(store, settings, sub, endpoints, start, end, failed)).as_json()
    if as_json:
        app_state.terminal.json(result)
    else:
        held = (
            f" ({result['muted']} muted, {result['folded']} folded)"
            if (result["muted"] or result["folded"])
            else ""
        )
        app_state.say(
            f"redelivered {result['in_log']} logged deliveries of {sub.name}:"
            f" {result['delivered']} delivered, {result['failed']} failed{held};"
            f" {result['not_in_log']} of the window no longer in the log"
        )
        for uri in result["skipped_switched_off"]:
            app_state.terminal.err(f"csnotify: left out {uri}: switched off")
    if result["failed"]:
        raise Exit(int(ExitCode.FAILED))


# -- sources -------------------------------------------------------------------------

SOURCES = ("api", "amqp", "stdin")


@app.command()
def listen(
    ctx: typer.Context,
    source: str = typer.Option(
        "api",
        "--source",
        "-s",
        metavar="api|amqp|stdin",
        help="Where events come from.",
        autocompletion=SOURCE_NAMES,
    ),
    once: bool = typer.Option(
        False, "--once", help="api: one poll; amqp: what is queued; stdin: to EOF."
    ),
    interval: float = typer.Option(30.0, "--interval", min=0.1, help="Seconds between API polls."),
    since: str | None = typer.Option(
        None, "--since", metavar="TIME", help="api: start here (ISO time or 30m, 2h, 1d)."
    ),
    print_events: bool = typer.Option(
        False, "--print", help="Also write each event as a JSON line on stdout."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Match and show; send and acknowledge nothing."
    ),
    log_format: str = typer.Option(
        "text", "--log-format", metavar="text|json", help="Log lines on stderr."
    ),
    duration: float | None = typer.Option(
        None, "--duration", min=0.1, help="Stop by itself after N seconds."
    ),
) -> None:
    """Run the pipeline: take events off a source and deliver them until stopped.

    api polls CloudStack's listEvents with the configured keys (cloudstack.*), keeping a
    cursor in the store so a restart neither loses nor repeats events. amqp consumes
    CloudStack's RabbitMQ event bus (amqp.*) from a durable queue that several listeners
    can share; each message is acknowledged once its deliveries are finished. stdin reads
    JSON lines. SIGTERM or SIGINT: deliveries in flight finish, then it exits 0.
    Subscriptions changed meanwhile take effect within about a second.

    \b
    Examples:
      csnotify listen --source amqp
      csnotify listen --source api --interval 10
      csnotify listen --source api --once --since 1h     # from cron
      csnotify listen --source amqp --print --dry-run | jq .type
    """
    import asyncio

    from csnotify import aio, logs
    from csnotify.delivery.settings import DeliverySettings
    from csnotify.listen import Listener, ListenOptions
    from csnotify.output import printable

    if source not in SOURCES:
        raise BadInput(f"unknown --source {source!r}; use one of {', '.join(SOURCES)}")
    if log_format not in logs.FORMATS:
        raise BadInput(f"unknown --log-format {log_format!r}; use text or json")
    app_state = state(ctx)
    logs.setup(app_state.verbose, app_state.quiet, log_format)
    settings = app_state.settings()
    options = ListenOptions(
        once=once, dry_run=dry_run, print_events=print_events, duration=duration
    )
    terminal = app_state.terminal

    stop, reader_gone = asyncio.Event(), asyncio.Event()

    def out(line: str) -> None:
        if reader_gone.is_set():
            return
        try:
            terminal.stdout.write(printable(line) + "\n")
            terminal.stdout.flush()
        except BrokenPipeError:  # `listen --print | head`: the reader is done, so are we
            stdout_gone()
            reader_gone.set()
            stop.set()

    async def run() -> int:
        listener = Listener(
            app_state.store(), DeliverySettings.from_settings(settings), options, out, stop=stop
        )
        src = _make_source(source, settings, interval, since, once, terminal)
        try:
            await listener.run(src)
        finally:
            close = getattr(getattr(src, "client", None), "close", None)
            if close is not None:
                await close()
        return listener.rejected

    _log_start(source, settings, interval, app_state.store())
    rejected = aio.run(run())
    if reader_gone.is_set():
        raise Exit(int(ExitCode.READER_GONE))
    if rejected and source == "stdin":
        raise Exit(int(ExitCode.FAILED))


def _log_start(source: str, settings: Settings, interval: float, store: Store) -> None:
    """One line at start, so that a journal says what runs even when nothing happens."""
    import logging

    from csnotify.logs import NOTICE
    from csnotify.redact import mask_uri

    where = {
        "api": f"{mask_uri(settings['cloudstack.url'])} every {interval:g} s",
        "amqp": f"{mask_uri(settings['amqp.url'])}, queue {settings['amqp.queue']!r} on"
        f" exchange {settings['amqp.exchange']!r}",
        "stdin": "standard input",
    }[source]
    subs = store.subscriptions()
    logging.getLogger("csnotify").log(
        NOTICE,
        "listening: source %s, %s; %d subscriptions (%d enabled)",
        source,
        where,
        len(subs),
        sum(s.enabled for s in subs),
    )


def _make_source(
    name: str,
    settings: Settings,
    interval: float,
    since: str | None,
    once: bool,
    terminal: Terminal,
) -> Any:
    if name == "stdin":
        from csnotify.sources.stdin import StdinSource

        return StdinSource(terminal.text_input())
    if name == "amqp":
        from csnotify.sources.amqp import AmqpSource

        return AmqpSource(
            settings["amqp.url"],
            settings["amqp.exchange"],
            settings["amqp.queue"],
            settings["amqp.prefetch"],
            once=once,
        )
    from csnotify.cloudstack import CloudStackClient, Credentials
    from csnotify.events import parse_since
    from csnotify.sources.api import ApiSource

    start = parse_since(since) if since else None
    client = CloudStackClient(
        Credentials.from_settings(settings), timeout=settings["delivery.timeout"] * 3
    )
    return ApiSource(client, interval, start, once)


@app.command()
def events(
    ctx: typer.Context,
    type_: str | None = typer.Option(None, "--type", help="Exact event type, e.g. VM.CREATE."),
    level: str | None = typer.Option(
        None, "--level", metavar="INFO|WARN|ERROR", autocompletion=LEVELS
    ),
    since: str | None = typer.Option(
        None, "--since", metavar="TIME", help="ISO time or 30m, 2h, 1d."
    ),
    until: str | None = typer.Option(None, "--until", metavar="TIME"),
    account: str | None = typer.Option(None, "--account", help="Account name."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="At most this many, newest first."),
    as_json: bool = typer.Option(
        False, "--json", help="One normalised event per line (JSON lines)."
    ),
) -> None:
    """Query CloudStack's listEvents with the configured keys, newest first.

    \b
    Examples:
      csnotify events --since 1h
      csnotify events --type VM.CREATE --level ERROR --limit 10
      csnotify events --json --since 1d | csnotify dispatch -
    """
    from csnotify import aio
    from csnotify.cloudstack import CloudStackClient, Credentials, api_date
    from csnotify.events import from_list_item, parse_since
    from csnotify.matching import parse_level

    app_state = state(ctx)
    creds = Credentials.from_settings(app_state.settings())
    filters = {
        "type": type_,
        "level": parse_level(level) if level else None,
        "startdate": api_date(parse_since(since)) if since else None,
        "enddate": api_date(parse_since(until)) if until else None,
        "account": account,
    }

    async def query() -> list[dict[str, Any]]:
        async with CloudStackClient(creds) as client:
            return await client.list_events(limit=limit, **{k: v for k, v in filters.items() if v})

    rows = aio.run(query())
    found = [from_list_item(r) for r in rows if isinstance(r.get("id"), str) and r.get("type")]
    if as_json:
        for event in found:
            app_state.terminal.out(event.json_text())
        return
    if not found:
        app_state.terminal.err("no events")
        return
    table = [
        [
            e.created,
            e.type,
            e.level,
            e.state,
            e.account,
            e.resource_name or e.resource_id,
            e.description,
        ]
        for e in found
    ]
    columns = ["CREATED", "TYPE", "LEVEL", "STATE", "ACCOUNT", "RESOURCE", "DESCRIPTION"]
    app_state.terminal.table(columns, table, optional=["ACCOUNT", "STATE"])


@app.command()
def simulate(
    ctx: typer.Context,
    listen_on: str = typer.Option(
        "127.0.0.1:8080", "--listen", metavar="HOST:PORT", help="API address (port 0: any)."
    ),
    amqp: str | None = typer.Option(
        None, "--amqp", metavar="URL", help="Also publish to this RabbitMQ."
    ),
    exchange: str = typer.Option(
        "cloudstack-events", "--exchange", help="Topic exchange to publish to."
    ),
    rate: str = typer.Option(
        "10/s", "--rate", metavar="N/s", help="Events per second (0: as fast as possible)."
    ),
    count: int | None = typer.Option(
        None, "--count", min=0, help="Stop generating after N events."
    ),
    replay: Path | None = typer.Option(
        None, "--replay", metavar="FILE", help="Replay these events instead."
    ),
    api_key: str | None = typer.Option(
        None, "--api-key", help="API key to accept (default: random)."
    ),
    secret_key: str | None = typer.Option(
        None,
        "--secret-key",
        envvar="CSNOTIFY_SIMULATE_SECRET_KEY",
        help="Secret key (default: random).",
    ),
    seed: int | None = typer.Option(None, "--seed", help="Make the generated events repeatable."),
    record: Path | None = typer.Option(
        None, "--record", metavar="FILE", help="Append each event here (JSON lines)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the connection details as one JSON line."
    ),
) -> None:
    """A CloudStack stand-in: the signed listEvents API at /client/api and, with --amqp,
    RabbitMQ publishing exactly as CloudStack's event bus does, fed with realistic events
    of all five categories. Runs until SIGTERM or SIGINT.

    \b
    Examples:
      csnotify simulate --rate 50/s
      csnotify simulate --amqp amqp://guest:guest@127.0.0.1:5672/ --count 1000 --json
      csnotify simulate --replay captured-events.jsonl --rate 0
    """
    import asyncio
    import contextlib
    import json
    import signal

    from csnotify import aio
    from csnotify.simulator.run import SimulatorOptions
    from csnotify.simulator.run import simulate as run_simulator

    try:
        per_second = float(rate.removesuffix("/s"))
        if per_second < 0:
            raise ValueError
    except ValueError:
        raise BadInput(f"--rate {rate!r}: use a number of events per second, e.g. 100/s") from None
    app_state = state(ctx)
    terminal = app_state.terminal
    options = SimulatorOptions(
        listen=listen_on,
        amqp=amqp,
        exchange=exchange,
        rate=per_second,
        count=count,
        replay=replay,
        api_key=api_key,
        secret_key=secret_key,
        seed=seed,
        record=record,
    )

    def ready(info: dict[str, Any]) -> None:
        if as_json:
            terminal.out(json.dumps(info))
        else:
            terminal.out(f"CloudStack simulator: API on {info['url']}")
            terminal.out(f"  api key:    {info['api_key']}")
            terminal.out(f"  secret key: {info['secret_key']}")
            if info["amqp"]:
                terminal.out(f"  publishing to exchange {info['exchange']} on {_masked(amqp)}")
        terminal.stdout.flush()

    def done(made: int) -> None:
        terminal.out(
            json.dumps({"generated": made})
            if as_json
            else f"generated {made} events; serving until stopped"
        )
        terminal.stdout.flush()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await run_simulator(options, ready, done, stop)

    aio.run(run())


def _masked(uri: str | None) -> str:
    from csnotify.redact import mask_uri

    return mask_uri(uri or "")


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
        2.0, "--interval", min=0.2, help="Seconds between refreshes with --watch."
    ),
) -> None:
    """Show listeners (events seen, delivered, failed), source cursors, the queue depth and
    every endpoint's state, counters and last error.

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
        report = snapshot()
        if as_json:
            app_state.terminal.json(report)
        else:
            _render_status(app_state.terminal, report)
        return
    try:
        if as_json or not app_state.terminal.live:
            while True:
                report = snapshot()
                if as_json:
                    app_state.terminal.stdout.write(json.dumps(report) + "\n")
                else:
                    _render_status(app_state.terminal, report)
                    app_state.terminal.out()
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
        lines.append(
            f"listener {lst['source']}: {state_word}, {lst.get('events', 0)} events,"
            f" {lst.get('delivered', 0)} delivered, {lst.get('failed', 0)} failed,"
            f" {lst.get('muted', 0)} muted, {lst.get('folded', 0)} folded,"
            f" {lst.get('rejected', 0)} rejected (updated {lst['updated'][:19]})"
        )
    for cur in report["cursors"]:
        lines.append(f"cursor {cur['source']}: at {cur['created']} (updated {cur['updated'][:19]})")
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
    columns += ["BACKLOG", "NEXT TRY", "LAST ERROR"]
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
                ep["backlog"],
                _clock(ep["next_attempt"]),
                ep["pending_error"] or ep["last_error"],
            ]
        )
    return columns, rows


def _clock(iso: str | None) -> str | None:
    """``2026-11-26T10:00:05Z`` -> ``10:00:05Z`` (today's times are what one watches)."""
    return iso[11:] if iso else None


STATUS_OPTIONAL = ["CONSEC", "FOLDED", "MUTED", "NEXT TRY", "BACKLOG"]


def _render_status(terminal: Terminal, report: dict[str, Any]) -> None:
    for line in _status_lines(report):
        terminal.out(line)
    columns, rows = _status_rows(report)
    if rows:
        terminal.out()
        terminal.table(columns, rows, optional=STATUS_OPTIONAL)


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
    duration: float = typer.Option(20.0, "--duration", min=1, help="Seconds to run listen for."),
    amqp: str | None = typer.Option(
        None, "--amqp", metavar="URL", help="Use this RabbitMQ (else the API source)."
    ),
    rate: float = typer.Option(20.0, "--rate", min=1, help="Simulated events per second."),
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

    app_state = state(ctx)
    logs.setup(0, quiet=True)
    logging.getLogger("csnotify").disabled = True  # the table (or progress lines) says what happens
    terminal = app_state.terminal
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

    if terminal.live and not as_json:
        from rich.live import Live

        with Live(console=terminal.console(), auto_refresh=False, transient=False) as live:
            result = aio.run(run_demo(duration, amqp, rate, show))
            live.update(_demo_table(result), refresh=True)
    else:
        result = aio.run(run_demo(duration, amqp, rate, show))
    summary = result.summary()
    if as_json:
        terminal.json(summary)
    else:
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
    ok = (
        summary["received"]["webhooks_with_valid_signature"] > 0
        and not summary["received"]["webhooks_with_invalid_signature"]
    )
    if not ok:
        raise Exit(int(ExitCode.FAILED))


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


# -- the tool itself ------------------------------------------------------------------

SHELLS = ("bash", "zsh", "fish")


@app.command()
def completion(
    shell: str = typer.Argument(
        ..., metavar="bash|zsh|fish", help="Your shell.", autocompletion=choices(*SHELLS)
    ),
) -> None:
    """Print the shell completion script (commands, options, subscription names).

    \b
    Examples:
      csnotify completion bash > ~/.local/share/bash-completion/completions/csnotify
      csnotify completion zsh > "${fpath[1]}/_csnotify"
      csnotify completion fish > ~/.config/fish/completions/csnotify.fish
    """
    from typer._completion_shared import get_completion_script

    if shell not in SHELLS:
        raise BadInput(f"unknown shell {shell!r}; use one of {', '.join(SHELLS)}")
    typer.echo(get_completion_script(prog_name="csnotify", complete_var=COMPLETE_VAR, shell=shell))


# -- config --------------------------------------------------------------------------


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    as_json: bool = JSON_OPT,
    reveal: bool = typer.Option(False, "--reveal", help="Show secret values."),
) -> None:
    """Show the effective settings and where each comes from (default, file, env, flag).

    Precedence: -c flags > CSNOTIFY_* environment > config file > defaults.

    \b
    Examples:
      csnotify config show
      csnotify -c delivery.timeout=5 config show --json
    """
    app_state = state(ctx)
    settings = app_state.settings()
    rows = settings.rows(reveal)
    if as_json:
        app_state.terminal.json({r["key"]: r["value"] for r in rows})
        return
    app_state.terminal.err(f"config file: {settings.path}")
    app_state.terminal.table(["KEY", "VALUE", "SOURCE"], [list(r.values()) for r in rows])


# A value may start with a dash (-1, an API key such as -Xh3...): a value, not options; so
# only --help (not -h, which a key may hold) is an option here.
@config_app.command(
    "set", context_settings={"ignore_unknown_options": True, "help_option_names": ["--help"]}
)
def config_set(
    ctx: typer.Context,
    key: str = typer.Argument(
        ..., help="Setting, e.g. delivery.timeout.", autocompletion=complete_setting_keys
    ),
    value: str = typer.Argument(..., help="New value; - reads it from stdin (for secrets)."),
) -> None:
    """Write one setting into the config file (created 0600 if missing).

    \b
    Examples:
      csnotify config set cloudstack.url https://cloud.example/client/api
      csnotify config set failures.disable_after 20
      csnotify config set cloudstack.secret_key - < /root/cloudstack-secret.txt
    """
    from csnotify import config

    app_state = state(ctx)
    path = app_state.config_path()
    typed = config.set_value(path, key, secret_value(value, app_state.terminal, key) or "")
    shown = config.mask_setting(key, typed) if config.SETTINGS[key].secret else typed
    app_state.say(f"{key} = {shown!r} in {path}")


@config_app.command("import-cmk")
def config_import_cmk(
    ctx: typer.Context,
    cmk_config: Path = typer.Option(
        Path("~/.cmk/config"), "--cmk-config", help="CloudMonkey's config file."
    ),
    profile: str | None = typer.Option(None, "--profile", help="Profile (default: cmk's current)."),
) -> None:
    """Copy url, apikey and secretkey of a CloudMonkey (cmk) profile into our config.

    \b
    Examples:
      csnotify config import-cmk
      csnotify config import-cmk --cmk-config ~/.cmk/config --profile prod
    """
    from csnotify import config

    app_state = state(ctx)
    cmk = config.read_cmk(cmk_config.expanduser(), profile)
    path = app_state.config_path()
    config.import_cmk(path, cmk)
    app_state.say(
        f"imported url, api_key and secret_key of profile {cmk.profile!r} from {cmk.path}"
        f" into {path}"
    )


COMPLETE_VAR = "_CSNOTIFY_COMPLETE"


def main() -> None:
    if COMPLETE_VAR in os.environ:  # a shell asking for completions (see 'csnotify completion')
        from typer._completion_classes import completion_init

        completion_init()
    try:
        try:
            app(prog_name="csnotify")
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        # Quietly, as Unix tools do when their reader is gone: the status of SIGPIPE.
        stdout_gone()
        sys.exit(int(ExitCode.READER_GONE))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
