"""The store's timestamps: log_now is log_time of now, to the microsecond, sortable as text."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from csnotify.clock import log_now, log_time


def test_log_now_is_log_time_of_now_and_sorts_as_text() -> None:
    stamps = []
    for _ in range(3000):  # crosses whole seconds now and then (the cached part)
        before = log_time(datetime.now(UTC))
        stamp = log_now()
        after = log_time(datetime.now(UTC))
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), stamp
        at, tick = datetime.fromisoformat(stamp), timedelta(microseconds=2)  # rounding
        assert datetime.fromisoformat(before) - tick <= at <= datetime.fromisoformat(after) + tick
        stamps.append(stamp)
        time.sleep(0.0005)
    assert stamps == sorted(stamps)
    assert len({s[:19] for s in stamps}) >= 2  # more than one second was formatted
