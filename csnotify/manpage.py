"""man/csnotify.1, made from the CLI's own commands, options and help texts plus the
sections written here. Regenerate with ``make docs``; a test fails when the checked-in page
is stale.

Usage: python -m csnotify.manpage > man/csnotify.1
"""

from __future__ import annotations

import re
import sys
from typing import Any

from csnotify import __version__

SUMMARY = "event publish/subscribe for Apache CloudStack"

DESCRIPTION = """\
csnotify gives Apache CloudStack the event publish/subscribe it lacks. Operators subscribe
endpoints (signed HTTP webhooks, email, SMS, local commands, any Apprise service) to
CloudStack event types, and csnotify takes every state change off CloudStack's event source
(the listEvents API or its RabbitMQ event bus) and delivers it to everyone interested.

It sends and forgets: the only delivery state it keeps is failure counting, and an endpoint
that fails too often is switched off.

Patterns are case-insensitive globs on the event type (VM.*, *.CREATE, *). Levels are a
minimum (INFO < WARN < ERROR). --where filters (FIELD=VALUE exact, FIELD~REGEX search)
are ANDed."""

ENDPOINTS = [
    ("https://..., http://...",
     "A JSON POST per event; 10 s timeout; redirects not followed; any 2xx is success. "
     "--format json sends {\"event\": EVENT, \"subscription\": NAME}; cloudevents sends "
     "CloudEvents 1.0 structured JSON; cloudstack sends what CloudStack 4.20's own webhooks "
     "send (the description JSON with X-CS-Event-ID, X-CS-Event and X-CS-Signature)."),
    ("cmd:PROGRAM ARGS",
     "Runs PROGRAM without a shell, the event JSON on stdin and CSNOTIFY_EVENT_TYPE, "
     "CSNOTIFY_EVENT_ID and CSNOTIFY_SUBSCRIPTION in its environment. Exit status 0 is "
     "success; otherwise the tail of its stderr is recorded. Killed after delivery.timeout."),
    ("mailto://, mailtos://, smseagle://, signal://, ntfy://, slack://, ...",
     "Anything else is handed to Apprise unchanged. People get a title and body from the "
     "--title and --body templates; SMS services get one line of at most 160 characters. "
     "At most delivery.human_max_per_minute messages a minute (10) unless --max-per-minute "
     "says otherwise; the events over it go out as one digest when the minute is up "
     "(\"990 more events: 594 VM.STOP, ...\"). --group-wait sends a burst as one message."),
]  # fmt: skip

SIGNING = """\
With a key, webhooks carry Standard Webhooks headers: webhook-id (the same for an event and
endpoint on every retry), webhook-timestamp (unix seconds) and webhook-signature
(v1, then the base64 HMAC-SHA256 of "{id}.{timestamp}.{body}"). A key written whsec_... is
used as its base64-decoded bytes, as Standard Webhooks libraries read it; any other key as
its UTF-8 bytes, and show --reveal prints its whsec_ form. csnotify verify checks a
delivery. With --format cloudstack, X-CS-Signature is the base64 HMAC-SHA256 of the body."""

FILES = [
    ("~/.local/share/csnotify/csnotify.db",
     "The store (SQLite, WAL): subscriptions, endpoints and their counters, the delivery log, "
     "mutes, pending digests, source cursors. Mode 0600 in a 0700 directory. Override with "
     "--db or CSNOTIFY_DB: another file, or a MariaDB/MySQL or PostgreSQL database given as "
     "mysql://USER:PASSWORD@HOST:3306/DATABASE or postgresql://USER:PASSWORD@HOST:5432/DATABASE."),
    ("~/.config/csnotify/config.toml",
     "Settings (TOML), mode 0600. Override with --config or CSNOTIFY_CONFIG."),
    ("~/.cmk/config", "CloudMonkey's configuration, read by config import-cmk."),
]  # fmt: skip

EXIT_STATUS = [
    ("0", "Success."),
    (
        "1",
        "An operation failed (a test delivery, a delivery of dispatch, a skipped input line,"
        " an invalid signature).",
    ),
    ("2", "Usage error or bad input; nothing was written."),
    (
        "3",
        "The CloudStack API, the broker or the store's database server could not be reached "
        "or refused the credentials.",
    ),
    ("141", "The reader of the output went away (csnotify list | head -1); it stopped quietly."),
]

EXAMPLES = [
    ("Sign webhooks for every VM event:",
     "csnotify subscribe 'VM.*' --to https://hooks.example.com/cs --key generate"),
    ("Page the on-call by email when something fails:",
     "csnotify subscribe '*' --level ERROR --to 'mailto://u:p@smtp.example.com?to=oncall@example.com'"),
    ("Update DNS when VMs of one account start or stop:",
     "csnotify subscribe VM.START VM.STOP --where account=web --to cmd:/usr/local/bin/dns-up"),
    ("Run the pipeline from CloudStack's RabbitMQ event bus:", "csnotify listen --source amqp"),
    ("Poll the API once (from cron):", "csnotify listen --source api --once"),
    ("Silence the on-call during a maintenance window:",
     "csnotify mute oncall --for 2h --reason 'host upgrades'"),
    ("After re-enabling an endpoint, send again what failed in the last two hours:",
     "csnotify redeliver vm-hooks --since 2h --failed"),
]  # fmt: skip

SEE_ALSO = "cmk(1), systemd.service(5), https://www.standardwebhooks.com/, https://github.com/caronc/apprise/wiki"


def esc(text: str) -> str:
    """Text for roff: backslashes and hyphens escaped, no line starting with . or '."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        ("\\&" + line) if line.startswith((".", "'")) else line for line in text.splitlines()
    )


def paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def describe(help_text: str) -> str:
    """A command's help without its examples (they go to EXAMPLES) or click's \\b marks."""
    body = re.split(r"\n\s*\x08?\s*\n?\s*Examples?:", help_text)[0]
    body = body.replace("\b", "")
    return "\n.PP\n".join(esc(p) for p in paragraphs(body))


def option_line(param: Any) -> tuple[str, str] | None:
    if param.param_type_name == "argument" or getattr(param, "hidden", False):
        return None
    names = ", ".join(f"\\fB{esc(n)}\\fR" for n in param.opts + param.secondary_opts)
    shown = param.metavar or str(param.name).upper()
    metavar = "" if param.is_flag or param.count else f" \\fI{esc(shown)}\\fR"
    return names + metavar, esc(" ".join((param.help or "").split()))


def usage(path: str, command: Any) -> str:
    pieces = [f"\\fBcsnotify {esc(path)}\\fR"]
    if any(p.param_type_name == "option" for p in command.params):
        pieces.append("[\\fIOPTIONS\\fR]")
    for p in command.params:
        if p.param_type_name == "argument":
            name = esc(str(p.metavar or p.name).upper())
            pieces.append(f"\\fI{name}\\fR" if p.required else f"[\\fI{name}\\fR]")
    return " ".join(pieces)


def commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    found = []
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):
            found += commands(command, path + " ")
        elif not command.hidden:
            found.append((path, command))
    return found


def render() -> str:
    import typer

    from csnotify.cli import app
    from csnotify.config import SETTINGS, env_name

    root = typer.main.get_command(app)
    out = [
        f'.TH CSNOTIFY 1 "" "csnotify {__version__}" "User Commands"',
        ".SH NAME",
        f"csnotify \\- {esc(SUMMARY)}",
        ".SH SYNOPSIS",
        ".B csnotify",
        "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGUMENTS\\fR]",
        ".SH DESCRIPTION",
        "\n.PP\n".join(esc(p) for p in paragraphs(DESCRIPTION)),
        ".SS Global options",
    ]
    for param in root.params:
        line = option_line(param)
        if line:
            out += [".TP", line[0], line[1]]
    out.append(".SH COMMANDS")
    for path, command in commands(root):
        out += [
            ".SS " + f'"{esc(path)}"',
            usage(path, command),
            ".PP",
            describe(command.help or ""),
        ]
        for param in command.params:
            line = option_line(param)
            if line and line[0] != "\\fB\\-h\\fR, \\fB\\-\\-help\\fR":
                out += [".TP", line[0], line[1]]
    out.append(".SH ENDPOINTS")
    for term, text in ENDPOINTS:
        out += [".TP", f"\\fB{esc(term)}\\fR", esc(text)]
    out += [".SH SIGNING", "\n.PP\n".join(esc(p) for p in paragraphs(SIGNING)), ".SH FILES"]
    for term, text in FILES:
        out += [".TP", f"\\fI{esc(term)}\\fR", esc(text)]
    out += [".SH ENVIRONMENT"]
    fixed = [
        ("CSNOTIFY_DB", "The store: a file or a database URL (as --db)."),
        ("CSNOTIFY_CONFIG", "The config file (as --config)."),
        ("NO_COLOR", "No colour or other escape codes in tables."),
        ("CSNOTIFY_VERIFY_KEY", "The key for verify (keeps it off the command line)."),
    ]
    for name, text in fixed:
        out += [".TP", f"\\fB{esc(name)}\\fR", esc(text)]
    for key, setting in SETTINGS.items():
        out += [
            ".TP",
            f"\\fB{esc(env_name(key))}\\fR",
            esc(f"Setting {key}: {setting.help} (default {setting.default!r})."),
        ]
    out.append(".SH EXIT STATUS")
    for code, text in EXIT_STATUS:
        out += [".TP", f"\\fB{code}\\fR", esc(text)]
    out.append(".SH EXAMPLES")
    for text, command in EXAMPLES:
        out += [".PP", esc(text), ".PP", ".RS 4", ".nf", esc(command), ".fi", ".RE"]
    out += [".SH SEE ALSO", esc(SEE_ALSO)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
