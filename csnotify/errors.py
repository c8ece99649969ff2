"""Errors are values with a message meant for an operator; the CLI turns each into one
line on stderr and the exit status it carries."""

from collections.abc import Iterable

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


def did_you_mean(
    value: str,
    known: Iterable[str],
    most: int = 3,
    cutoff: float = 0.6,
    quote: bool = True,
    any_case: bool = False,
) -> str:
    """``; did you mean 'a' or 'b'?`` for an unknown ``value`` (the ``most`` closest of
    ``known``), or "" when none is close. ``any_case``: compared without case, shown as
    ``known`` spells them."""
    import difflib

    by_key = {(k.lower() if any_case else k): k for k in known}
    close = difflib.get_close_matches(
        value.lower() if any_case else value, list(by_key), n=most, cutoff=cutoff
    )
    if not close:
        return ""
    return (
        "; did you mean "
        + " or ".join(repr(by_key[c]) if quote else by_key[c] for c in close)
        + "?"
    )
