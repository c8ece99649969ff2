"""Settings: config show, config set, config import-cmk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from csnotify.cli.common import (
    JSON_OPT,
    AppState,
    CsnotifyGroup,
    app,
    complete_setting_keys,
    render,
    secret_value,
    state,
)

config_app = typer.Typer(
    cls=CsnotifyGroup,
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Show and change settings (config show, config set, config import-cmk).",
)
app.add_typer(config_app, name="config")


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

    def text(app_state: AppState, _values: dict[str, Any]) -> None:
        app_state.terminal.err(f"config file: {settings.path}")
        app_state.terminal.table(["KEY", "VALUE", "SOURCE"], [list(r.values()) for r in rows])

    render(app_state, {r["key"]: r["value"] for r in rows}, as_json, text)


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
    allow_commands: bool = typer.Option(
        False, "--allow-commands", help="Accept a cmd: program for failures.notify."
    ),
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
    given = secret_value(value, app_state.terminal, key) or ""
    typed = config.set_value(path, key, given, allow_commands)
    secret = config.SETTINGS[key].secret
    if secret and value != "-" and config.holds_secret(key, typed):
        app_state.terminal.err(
            f"csnotify: warning: the value of {key} was given where ps and shell history show"
            f" it; next time give it on stdin: 'csnotify config set {key} -'"
        )
    shown = config.mask_setting(key, typed) if secret else typed
    text = str(shown).lower() if isinstance(shown, bool) else repr(shown)  # as TOML writes it
    app_state.say(f"{key} = {text} in {path}")


@config_app.command("import-cmk")
def config_import_cmk(
    ctx: typer.Context,
    cmk_config: Path | None = typer.Option(
        None,
        "--cmk-config",
        help="CloudMonkey's config file (default: ~/.cmk/config, else ~/.cloudmonkey/config).",
    ),
    profile: str | None = typer.Option(None, "--profile", help="Profile (default: cmk's current)."),
) -> None:
    """Copy url, apikey, secretkey and verifycert of a CloudMonkey profile into our config.

    Reads CloudMonkey 6 (cmk, ~/.cmk/config: core keys without a header, one section per
    profile) and CloudMonkey 5 (~/.cloudmonkey/config, [core] section). verifycert = false
    becomes cloudstack.verify_tls = false.

    \b
    Examples:
      csnotify config import-cmk
      csnotify config import-cmk --cmk-config ~/.cmk/config --profile prod
    """
    from csnotify import config

    app_state = state(ctx)
    cmk = config.read_cmk(config.cmk_config_path(cmk_config), profile)
    path = app_state.config_path()
    config.import_cmk(path, cmk)
    tls = "" if cmk.verify_tls else " (verify_tls = false, as its verifycert)"
    app_state.say(
        f"imported url, api_key and secret_key of profile {cmk.profile!r} from {cmk.path}"
        f" into {path}{tls}"
    )
