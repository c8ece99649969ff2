"""Log lines on stderr: ``csnotify: warning: ...`` for people, one JSON object per line
for log collectors (``--log-format json``). Messages mask URI secrets where they are made."""

from __future__ import annotations

import json
import logging
from typing import IO

from csnotify.output import printable
from csnotify.redact import mask_text

FORMATS = ("text", "json")
# What an operator should see in a journal at default verbosity without it being a
# warning: listen's one line at start.
NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "message": mask_text(record.getMessage()),
        }
        for key, value in getattr(record, "fields", {}).items():
            doc[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            doc["error"] = mask_text(f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}")
        return printable(json.dumps(doc, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def __init__(self, traceback: bool) -> None:
        super().__init__()
        self.traceback = traceback

    def format(self, record: logging.LogRecord) -> str:
        line = f"csnotify: {record.levelname.lower()}: {one_line(record.getMessage())}"
        if record.exc_info and record.exc_info[1] is not None:
            if self.traceback:
                return line + "\n" + mask_text(self.formatException(record.exc_info))
            line += f" ({one_line(f'{type(record.exc_info[1]).__name__}: {record.exc_info[1]}')})"
        return line


def one_line(text: str) -> str:
    """A log record is one line: line breaks in an event field or a receiver's answer are
    shown as \\n, so that they cannot forge a record of their own."""
    return mask_text(printable(text)).replace("\r", "\\r").replace("\n", "\\n")


def setup(stream: IO[str], verbose: int = 0, quiet: bool = False, fmt: str = "text") -> None:
    """Log lines to ``stream`` (the terminal's stderr)."""
    level = logging.ERROR if quiet else (NOTICE, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(traceback=verbose > 0))
    logger = logging.getLogger("csnotify")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    # Libraries (aio-pika, aiormq, asyncio) log through the root logger: their lines show
    # only with -vv, in our format; otherwise Python's last-resort handler would print them.
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler if verbose >= 2 else logging.NullHandler())
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.CRITICAL)
