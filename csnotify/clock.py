"""Times as csnotify writes them, always UTC, in two precisions:

- ``utc_iso`` / ``now_iso``: to the second (``2026-11-26T10:00:05Z``), for what people
  read and CloudStack compares: event times, mutes, the API cursor;
- ``log_time`` / ``log_now``: to the microsecond (``2026-11-26T10:00:05.123456Z``), for
  the store's own rows (deliveries, updates, migrations), which sort as text.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

_second: list[object] = [-1, ""]  # the last whole second log_now formatted, and its text


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_iso() -> str:
    return utc_iso(datetime.now(UTC))


def log_time(moment: datetime) -> str:
    """A moment as the store writes times (UTC, microseconds), so they compare as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log_now() -> str:
    """``log_time`` of now; the second's text is formatted once per second (it runs once
    per delivery)."""
    now = time.time()
    second = int(now)
    if _second[0] != second:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int((now - second) * 1_000_000):06d}Z"
