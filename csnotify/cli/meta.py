"""The tool itself: completion (the shell scripts; --version is a global option)."""

from __future__ import annotations

import typer

from csnotify import APP_NAME
from csnotify.cli.common import COMPLETE_VAR, app, choices, state
from csnotify.errors import BadInput

SHELLS = ("bash", "zsh", "fish")


@app.command()
def completion(
    ctx: typer.Context,
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
    script = get_completion_script(prog_name=APP_NAME, complete_var=COMPLETE_VAR, shell=shell)
    state(ctx).terminal.out(script)
