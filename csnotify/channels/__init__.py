"""Endpoint kinds: native webhooks (http/https), local commands (cmd:), Apprise (the rest).

This module only classifies and validates ``--to`` URIs; the senders live beside it and
are imported by the commands that deliver, so that management commands start fast.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

from csnotify.errors import BadInput
from csnotify.models import COMMAND, WEBHOOK, endpoint_kind
from csnotify.redact import mask_uri


def command_argv(uri: str) -> list[str]:
    """``cmd:/usr/local/bin/dns-update --zone example.org`` -> argv, never through a shell."""
    try:
        argv = shlex.split(uri[len("cmd:") :])
    except ValueError as exc:
        raise BadInput(f"--to {mask_uri(uri)!r}: cannot split the command line ({exc})") from None
    if not argv:
        raise BadInput(
            f"--to {mask_uri(uri)!r}: no program after 'cmd:'; e.g. cmd:/usr/local/bin/hook"
        )
    return argv


def resolve_program(program: str) -> str | None:
    """The program if it is an absolute path to an executable file. A bare name would be
    looked up on PATH at every delivery: whoever can write a directory early on PATH
    would choose what runs."""
    if not program.startswith("/"):
        return None
    path = Path(program)
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_names(value: str) -> tuple[str, ...]:
    """``"HTTPS_PROXY, LDAP_URI"`` -> the names, refusing what is not a variable name."""
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    for name in names:
        if not _ENV_NAME.fullmatch(name):
            raise BadInput(
                f"{name!r} is not an environment variable name;"
                " give names separated by commas, e.g. HTTPS_PROXY,LDAP_URI"
            )
    return names


def validate_endpoint(uri: str) -> str:
    """Refuse an URI that cannot be delivered to; return it stripped.

    Errors show the URI with its secrets masked."""
    uri = uri.strip()
    if not uri:
        raise BadInput("empty --to; give an URI such as https://hooks.example/cs")
    kind = endpoint_kind(uri)
    _refuse_unwritable(uri, spaces=kind == COMMAND)
    if kind == WEBHOOK:
        _validate_http(uri)
    elif kind == COMMAND:
        argv = command_argv(uri)
        if resolve_program(argv[0]) is None:
            raise BadInput(
                f"--to {mask_uri(uri)!r}: {argv[0]!r} is not an absolute path to an executable"
                " file (give its full path, e.g. cmd:/usr/bin/logger, and check its x bit)"
            )
    else:
        _validate_apprise(uri)
    return uri


def _refuse_unwritable(uri: str, spaces: bool) -> None:
    """Control characters are never part of an URI, nor spaces (but a command line has)."""
    import unicodedata

    for c in uri:
        if unicodedata.category(c) == "Cc" or (c.isspace() and not spaces):
            raise BadInput(
                f"--to {mask_uri(uri)!r} contains {c!r}; an URI has no spaces or control"
                " characters (percent-encode them, e.g. %20)"
            )


def host_problem(host: str) -> str | None:
    """Why ``host`` (from a URL, IPv6 without brackets) cannot be looked up, or None."""
    if ":" in host:  # IPv6: urlsplit checked it
        return None
    try:
        host.encode("idna")  # empty labels, labels over 63 characters, bad code points
    except UnicodeError:
        return f"the host name {host!r} is not valid (empty part, or a part over 63 characters)"
    return None


def _validate_http(uri: str) -> None:
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise BadInput(f"--to {mask_uri(uri)!r}: not a valid URL ({exc})") from None
    if not parts.hostname:
        raise BadInput(f"--to {mask_uri(uri)!r}: no host; e.g. https://hooks.example/cs")
    if (problem := host_problem(parts.hostname)) is not None:
        raise BadInput(f"--to {mask_uri(uri)!r}: {problem}")
    if port == 0:
        raise BadInput(f"--to {mask_uri(uri)!r}: port 0 is not a valid port")


def _validate_apprise(uri: str) -> None:
    if "://" not in uri:
        raise BadInput(
            f"--to {mask_uri(uri)!r}: not an URI; use https://..., cmd:/path/to/program,"
            " or an Apprise URI such as mailto://user:pass@smtp.example?to=ops@example"
        )
    import apprise

    from csnotify.channels.apprise import AppriseWarnings

    warnings = AppriseWarnings()
    warnings.attach()
    warnings.start()
    try:
        plugin = apprise.Apprise.instantiate(uri, suppress_exceptions=True)
    finally:
        messages = warnings.take()
        warnings.detach()
    if plugin is None:
        reason = messages[-1] if messages else "unsupported or malformed"
        reason = reason.replace(uri, mask_uri(uri))
        raise BadInput(
            f"--to {mask_uri(uri)!r}: Apprise cannot use this URI ({reason.splitlines()[0]});"
            " see https://github.com/caronc/apprise/wiki for the URI of each service"
        )
