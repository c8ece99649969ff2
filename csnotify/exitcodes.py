"""Exit statuses, the same for every command (documented in README and the man page)."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # an operation ran and failed, e.g. a test delivery
    USAGE = 2  # bad input or usage; nothing was written (typer's convention)
    UNREACHABLE = 3  # CloudStack API, broker or database server unreachable, or refused us
    READER_GONE = 128 + 13  # stdout's reader went away: what a shell shows for SIGPIPE
