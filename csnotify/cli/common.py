"""What every command shares: the app and its error handling (one line and an exit
status, never a traceback), the global options and state, options declared for several
commands, completion of their values, and small input and rendering helpers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit, TyperException

from csnotify import APP_NAME, __version__
from csnotify.errors import BadInput, CsnotifyError
from csnotify.exitcodes import ExitCode
from csnotify.output import Terminal
from csnotify.redact import mask_text

if TYPE_CHECKING:
    from csnotify.config import Settings
    from csnotify.store import Store


class OneLineUsageError(UsageError):
    """Click's usage errors shown as ours are: one line, what was wrong and where to look."""

    def show(self, file: Any = None) -> None:
        where = self.ctx.command_path if self.ctx is not None else "csnotify"
        message = " ".join(self.format_message().split()).rstrip(".")
        message = message.replace(". Did you mean", "; did you mean")
        if message[1:2].islower():
            message = message[:1].lower() + message[1:]
        line = f"csnotify: error: {message} (see '{where} --help')"
        if file is not None:
            file.write(line + "\n")
        else:
            terminal_of(self.ctx).err(line)


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
            terminal_of(ctx).stdout_gone()
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


def terminal_of(ctx: Any) -> Terminal:
    """The terminal of this run: the one ``main`` was given (a test's), kept in the app's
    state once the global options are read; the process's own when there is neither."""
    obj = ctx.find_root().obj if ctx is not None else None
    if isinstance(obj, AppState):
        return obj.terminal
    return obj if isinstance(obj, Terminal) else Terminal()


def _fail(ctx: typer.Context, message: str, code: int, exc: BaseException | None) -> NoReturn:
    state = ctx.obj if isinstance(ctx.obj, AppState) else None
    terminal = terminal_of(ctx)
    if exc is not None and state is not None and state.verbose:
        import traceback

        terminal.err(mask_text("".join(traceback.format_exception(exc)).rstrip()))
    terminal.err(f"csnotify: error: {mask_text(message)}")
    raise Exit(int(code))


app = typer.Typer(
    name=APP_NAME,
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


@dataclass
class AppState:
    terminal: Terminal
    db: str | None  # a file or a database URL
    config: Path | None
    overrides: list[str] = field(default_factory=list)
    verbose: int = 0
    quiet: bool = False
    _store: Store | None = None

    def store(self) -> Store:
        if self._store is None:
            from csnotify.store import open_store

            self._store = open_store(self.db, self.terminal.environ)
            for notice in self._store.notices:
                self.terminal.err(f"csnotify: warning: {notice}")
        return self._store

    def config_path(self) -> Path:
        from csnotify.config import config_path

        return config_path(self.config, self.terminal.environ)

    def settings(self) -> Settings:
        from csnotify import config

        overrides = config.parse_overrides(self.overrides)
        loaded = config.load(self.config_path(), self.terminal.environ, overrides)
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


def _version(ctx: typer.Context, value: bool) -> None:
    if value:
        terminal_of(ctx).out(f"csnotify {__version__}")  # eager: before AppState is made
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
    db: str | None = typer.Option(
        None,
        "--db",
        envvar="CSNOTIFY_DB",
        metavar="PATH|URL",
        help="Store: a SQLite file, or mysql://USER:PASS@HOST:3306/DB or"
        " postgresql://USER:PASS@HOST:5432/DB.",
        show_default=False,
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
    terminal = terminal_of(ctx)
    if option:  # an unknown key is refused by every command, not only those that read it
        from csnotify.config import parse_overrides

        parse_overrides(option)
    ctx.obj = AppState(
        terminal=terminal,
        db=given(ctx, "db", db),  # else CSNOTIFY_DB as the terminal's environment has it
        config=given(ctx, "config", config),  # else CSNOTIFY_CONFIG, likewise
        overrides=option,
        verbose=verbose,
        quiet=quiet,
    )
    ctx.call_on_close(ctx.obj.close)
    if ctx.invoked_subcommand is None:
        ctx.obj.terminal.out(OVERVIEW.rstrip())


def given(ctx: Any, name: str, value: Any, var: str | None = None) -> Any:
    """The value of option ``name`` as given on the command line, else the environment
    variable ``var`` as the terminal's environment has it, else None. Click reads an
    option's variable from the process's environment; the terminal's is the same unless
    a test gave one of its own."""
    source = ctx.get_parameter_source(name)
    if source is not None and source.name in ("COMMANDLINE", "PROMPT"):
        return value
    return (terminal_of(ctx).environ.get(var) or None) if var else None


def _from_store(ctx: typer.Context, read: Callable[[Store], list[str]]) -> list[str]:
    """Values for shell completion, read through the store's API from the store if it is
    a file that exists (else none: a server is not asked on each <Tab>)."""
    import sqlite3

    from csnotify.store import Store, chosen_store

    root = ctx.find_root()
    path = chosen_store(given(root, "db", root.params.get("db")), terminal_of(ctx).environ)
    store = None if isinstance(path, str) else Store.peek(path)
    if store is None:
        return []
    try:
        return read(store)
    except sqlite3.Error:  # not a store, or one an older csnotify wrote
        return []
    finally:
        store.close()


def complete_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Subscription names for shell completion."""
    return [n for n in _from_store(ctx, lambda store: store.names()) if n.startswith(incomplete)]


def complete_endpoints(ctx: typer.Context, incomplete: str) -> list[str]:
    """Endpoints of the subscription named on the line (of all, without a name), in the
    masked form that list shows and --endpoint accepts: completion never shows secrets."""
    from csnotify.redact import mask_uri

    # While an option's value is completed, click leaves the arguments before it unparsed.
    name = ctx.params.get("name") or next((a for a in ctx.args if not a.startswith("-")), None)

    def uris(store: Store) -> list[str]:
        subs = store.subscriptions() if name is None else [store.subscription(name)]
        return [mask_uri(ep.uri) for sub in subs if sub is not None for ep in sub.endpoints]

    return [uri for uri in dict.fromkeys(_from_store(ctx, uris)) if uri.startswith(incomplete)]


def complete_mute_ids(ctx: typer.Context, incomplete: str) -> list[str]:
    """Ids of the mutes in force."""
    from csnotify.mutes import active

    ids = _from_store(ctx, lambda store: [str(m.id) for m in active(store)])
    return [i for i in ids if i.startswith(incomplete)]


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
VERIFY_SCHEMES = choices("standard", "cloudstack")


def finite(value: float | None) -> float | None:
    """Callback of float options: NaN and infinity are refused (click's ``min=`` lets NaN
    through: no comparison with it is true)."""
    import math

    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value!r} is not a finite number")
    return value


def secret_value(value: str | None, terminal: Terminal, what: str) -> str | None:
    """``-`` reads a secret from stdin (a hidden prompt on a terminal), so that it stays out
    of shell history and ps."""
    if value != "-":
        return value
    if terminal.stdin_is_tty:
        return terminal.secret(f"{what}: ")
    text = terminal.stdin.readline().rstrip("\r\n")
    if not text:
        raise BadInput(f"{what}: nothing on stdin")
    return text


def endpoint_uris(
    to: list[str], to_file: Path | None, terminal: Terminal, option: str = "--to"
) -> list[str]:
    """``--to`` (``option``) values, with ``-`` read from stdin (one URI a line; a hidden
    prompt on a terminal) and ``--to-file`` lines added: URIs with passwords stay out of
    argv."""
    uris = [u for u in to if u != "-"]
    if "-" in to:
        if terminal.stdin_is_tty:
            uris.append(secret_value("-", terminal, "endpoint URI") or "")
        else:
            uris += _uri_lines(terminal.stdin.read(), f"{option} - (stdin)")
    if to_file is not None:
        try:
            text = to_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"cannot read --to-file {to_file}: {exc}") from None
        uris += _uri_lines(text, f"--to-file {to_file}")
    if not uris:
        raise BadInput(f"give an endpoint: {option} URI, {option} - (stdin) or --to-file FILE")
    return uris


def _uri_lines(text: str, where: str) -> list[str]:
    lines = [ln.strip() for ln in text.splitlines()]
    uris = [ln for ln in lines if ln and not ln.startswith("#")]
    if not uris:
        raise BadInput(f"{where}: no URI (one a line; # starts a comment)")
    return uris


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
CATEGORY_OPT = typer.Option(
    [],
    "--category",
    metavar="CATEGORY",
    help="CloudStack category to receive (repeatable): ActionEvent, AlertEvent, UsageEvent,"
    " ResourceStateEvent, AsyncJobEvent, or '*' for all. Default: each operation's outcome,"
    " and alerts.",
    autocompletion=choices(
        "ActionEvent", "AlertEvent", "UsageEvent", "ResourceStateEvent", "AsyncJobEvent"
    ),
)
STATE_OPT = typer.Option(
    [],
    "--state",
    metavar="STATE",
    help="CloudStack state (phase) to receive (repeatable), e.g. Scheduled, Started,"
    " Completed, FAILED, Running.",
)
GROUP_WAIT_OPT = typer.Option(
    None,
    "--group-wait",
    metavar="DURATION",
    help="Collect events this long (e.g. 30s) into one message to human endpoints (0: off).",
)

# Set by a shell asking for completions: main() answers it, 'completion' writes scripts that use it
COMPLETE_VAR = "_CSNOTIFY_COMPLETE"


# -- used by several command families: input, delivery settings, rendering -------------


def render(
    app_state: AppState,
    result: Any,
    as_json: bool,
    text: Callable[[AppState, Any], None],
    lines: bool = False,
) -> None:
    """The one place a command's result becomes output: for scripts with --json, its
    ``as_json()`` (or the result itself, when it is plain data), else ``text`` (the
    command's own words and tables for people). With ``lines``, the JSON is JSON lines,
    for what is read as it comes: one line for each item of a list, else one for it."""
    if not as_json:
        text(app_state, result)
        return
    data = _as_data(result)
    if not lines:
        app_state.terminal.json(data)
        return
    for item in data if isinstance(data, list) else [data]:
        app_state.terminal.json_line(item)


def redrawn(app_state: AppState, as_json: bool) -> bool:
    """Whether what changes is redrawn in place (a rich Live display) rather than written
    one part after another: for people on a live terminal, never with --json."""
    return app_state.terminal.live and not as_json


def _as_data(value: Any) -> Any:
    """A result as plain data: its ``as_json()``, a list's items each so, else itself."""
    if isinstance(value, list):
        return [_as_data(item) for item in value]
    as_data = getattr(value, "as_json", None)
    return as_data() if as_data is not None else value


def _delivery_settings(app_state: AppState) -> Any:
    from csnotify import logs
    from csnotify.delivery.settings import DeliverySettings

    logs.setup(app_state.terminal.stderr, app_state.verbose, app_state.quiet)
    return DeliverySettings.from_settings(app_state.settings())


def _clock(iso: str | None, enabled: bool = True) -> str | None:
    """``2026-11-26T10:00:05Z`` -> ``10:00:05Z`` (today's times are what one watches);
    ``due`` once it has passed (the endpoint is busy with earlier attempts); ``when
    enabled`` for a switched-off endpoint (its deliveries wait for 'csnotify enable')."""
    if not iso:
        return None
    if not enabled:
        return "when enabled"
    from csnotify.clock import now_iso

    return "due" if iso <= now_iso() else iso[11:]


def _masked(uri: str | None) -> str:
    from csnotify.redact import mask_uri

    return mask_uri(uri or "")
