"""The command line: parse, call the core, render. Nothing else lives here.

Heavy modules (apprise, httpx, aio-pika, rich tables) are imported inside the commands
that need them so that ``csnotify --help`` and ``csnotify list`` start fast.

One module per command family. Importing a module registers its commands, so the order
of the imports below is the order of the commands in ``csnotify --help``:

  common         the app, error handling, global options, shared options and helpers
  subscriptions  subscribe, list, show, update, unsubscribe, enable, disable
  export         export, import, store copy
  delivery       dispatch, test, verify, deliveries
  control        match, mute, mutes, unmute, redeliver
  sources        listen, events, simulate
  status         status, demo
  serve          serve, token create, token list, token revoke
  meta           completion
  config         config show, config set, config import-cmk
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout

from csnotify import APP_NAME
from csnotify.cli.common import COMPLETE_VAR, app
from csnotify.exitcodes import ExitCode
from csnotify.output import Terminal

# Imported for their commands, in the order of --help (so: not sorted).
# isort: off
from csnotify.cli import subscriptions, export, delivery, control  # noqa: F401
from csnotify.cli import sources, status, serve, meta, config  # noqa: F401
# isort: on

__all__ = ["app", "main"]


def main(args: Sequence[str] | None = None, terminal: Terminal | None = None) -> None:
    """Run the command line ``args`` (default: the process's) with ``terminal`` (default:
    the process's environment, stdin, stdout and stderr): a test gives a terminal of its
    own, as httpie's tests give a MockEnvironment. Exits with the command's status."""
    terminal = terminal if terminal is not None else Terminal()
    # a shell asking for completions (see 'csnotify completion')
    if COMPLETE_VAR in terminal.environ:
        from typer._completion_classes import completion_init

        completion_init()
    try:
        try:
            # click writes help (and "Aborted!") to sys.stdout and sys.stderr itself: for
            # this run, those are the terminal's
            with redirect_stdout(terminal.stdout), redirect_stderr(terminal.stderr):
                app(args=None if args is None else list(args), prog_name=APP_NAME, obj=terminal)
        finally:
            terminal.stdout.flush()
    except BrokenPipeError:
        # Quietly, as Unix tools do when their reader is gone: the status of SIGPIPE.
        terminal.stdout_gone()
        sys.exit(int(ExitCode.READER_GONE))
