"""Errors are values with a message meant for an operator; the CLI turns each into one
line on stderr and the exit status it carries."""

from csnotify.exitcodes import ExitCode


class CsnotifyError(Exception):
    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(CsnotifyError):
    """The user asked for something malformed or impossible; nothing was changed."""

    exit_code = ExitCode.USAGE


class NotFound(BadInput):
    """A named thing (subscription, endpoint, setting) does not exist."""


class NameTaken(BadInput):
    """A name given for a new (or renamed) thing is already used."""


class OperationFailed(CsnotifyError):
    exit_code = ExitCode.FAILED


class Unreachable(CsnotifyError):
    exit_code = ExitCode.UNREACHABLE
