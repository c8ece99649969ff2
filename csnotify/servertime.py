"""The management server's time zone, as CloudStack uses it in listEvents.

CloudStack writes ``created`` in its JVM's zone with the offset
(``yyyy-MM-dd'T'HH:mm:ssZ``, api/src/main/java/org/apache/cloudstack/api/BaseCmd.java
``s_outputFormat``) and reads ``startdate``/``enddate`` given as ``yyyy-MM-dd HH:mm:ss``
in that same zone (server/src/main/java/com/cloud/api/dispatch/ParamProcessWorker.java,
``newInputFormat``, a SimpleDateFormat without a zone). So a time we send must be the
server's wall clock. We know the zone when ``cloudstack.timezone`` names it; otherwise we
learn the offset from the ``created`` of the events the server returns.

We do not send the offset form (``2024-05-14T10:22:31+0000``, said to be accepted since
4.18): a server without it matches neither pattern of ParamProcessWorker and its lenient
``yyyy-MM-dd`` parser reads only the date, silently widening the window to whole days.

Every wall time is chosen to be safe whatever the server makes of it: a start never later
than meant (a repeated hour at a DST change may be read as either instant), an end never
earlier. Values are pure: time is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

from csnotify.errors import BadInput

WALL = "%Y-%m-%d %H:%M:%S"  # BaseCmd/ParamProcessWorker newInputFormat
# Zones change their offset at night, local time (00:00 to 03:00 in tzdata's rules): a
# learned offset may have shrunk unseen when a start falls in those hours.
CHANGE_HOURS = range(4)
CHANGE = timedelta(hours=1)  # the largest DST step in use
# Offsets in use on Earth lie between -12:00 and +14:00: with nothing known, a wall time
# read with any of them stays on the safe side.
WESTMOST = timedelta(hours=-12)
EASTMOST = timedelta(hours=14)
_OFFSET = re.compile(r"^(?:UTC|GMT)?([+-])(\d{1,2}):?(\d{2})?$")


def parse_zone(text: str) -> tzinfo:
    """``America/New_York``, ``UTC``, ``+05:30``, ``-0500``, ``UTC+1``; else BadInput."""
    value = text.strip()
    if value.upper() in ("UTC", "Z", "GMT"):
        return UTC
    match = _OFFSET.match(value.upper())
    if match:
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
        if delta > EASTMOST:
            raise BadInput(f"time zone offset {text!r} is out of range (-12:00 to +14:00)")
        return timezone(-delta if sign == "-" else delta)
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        if not value or ".." in value or value.startswith("/"):
            raise ValueError
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadInput(
            f"unknown time zone {text!r}; use an IANA name such as America/New_York"
            " or an offset such as +05:30"
        ) from None


def host_zone(environ: Mapping[str, str]) -> tzinfo:
    """This host's zone, as a JVM takes it (``TZ`` in ``environ``, else /etc/localtime),
    else its offset."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = environ.get("TZ", "").lstrip(":")
    if not name:
        try:
            link = str(Path("/etc/localtime").readlink())
            name = link.split("zoneinfo/", 1)[1] if "zoneinfo/" in link else ""
        except OSError:
            name = ""
    try:
        return ZoneInfo(name) if name else datetime.now().astimezone().tzinfo or UTC
    except (ZoneInfoNotFoundError, ValueError):
        return datetime.now().astimezone().tzinfo or UTC


def offset_of(created: Any) -> timedelta | None:
    """The offset a ``created`` value carries (``...+0530`` -> 5:30), None if unreadable."""
    if not isinstance(created, str):
        return None
    try:
        return datetime.strptime(created.strip(), "%Y-%m-%dT%H:%M:%S%z").utcoffset()
    except ValueError:
        return None


def offset_text(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def parse_offset(text: str) -> timedelta:
    zone = parse_zone(text)
    return zone.utcoffset(None) or timedelta(0)


def _readings(wall: datetime, zone: tzinfo) -> list[datetime]:
    """Every instant a wall-clock time can mean in ``zone`` (two in a repeated hour)."""
    return sorted({wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1)})


@dataclass
class ServerClock:
    """What we know of the server's zone: named (``cloudstack.timezone``) or an offset
    learned from ``created`` values, or nothing yet."""

    zone: tzinfo | None = None  # forced
    offset: timedelta | None = None  # learned

    @property
    def known(self) -> bool:
        return self.zone is not None or self.offset is not None

    def describe(self) -> str:
        if self.zone is not None:
            return str(self.zone)
        return offset_text(self.offset) if self.offset is not None else "unknown"

    def start_offset(self) -> timedelta:
        return self.offset if self.offset is not None else WESTMOST

    def start(self, moment: datetime, back: bool = False) -> str:
        """A ``startdate`` the server reads as ``moment`` or earlier; ``back``: an hour
        earlier, safe even if the zone has left DST since its offset was learned."""
        return self._wall(moment - (CHANGE if back else timedelta(0)), early=True)

    def unsure(self, moment: datetime) -> bool:
        """A learned offset, and ``moment`` in the night hours when it may have changed."""
        if self.zone is not None or self.offset is None:
            return False
        return (moment.astimezone(UTC) + self.offset).hour in CHANGE_HOURS

    def end(self, moment: datetime) -> str:
        """An ``enddate`` the server reads as ``moment`` or later."""
        return self._wall(moment, early=False)

    def _wall(self, moment: datetime, early: bool) -> str:
        moment = moment.astimezone(UTC).replace(microsecond=0)
        if self.zone is None:
            offset = self.offset if self.offset is not None else (WESTMOST if early else EASTMOST)
            return (moment + offset).strftime(WALL)
        candidate = moment
        for _ in range(4):  # a DST change moves the answer once; zones do not stack them
            wall = candidate.astimezone(self.zone).replace(tzinfo=None)
            readings = _readings(wall, self.zone)
            if (readings[-1] <= moment) if early else (readings[0] >= moment):
                return wall.strftime(WALL)
            spread = readings[-1] - readings[0]
            candidate = candidate - spread if early else candidate + spread
        return wall.strftime(WALL)

    def learn(self, rows: list[dict[str, Any]]) -> timedelta | None:
        """Take the offset of the newest row (rows newest first); returns the smallest
        offset among them, which tells whether a start we sent could have been read late."""
        offsets = [o for o in (offset_of(r.get("created")) for r in rows) if o is not None]
        if not offsets:
            return None
        if self.zone is None:
            self.offset = offsets[0]
        return min(offsets)


def utc_second(created: str) -> datetime:
    return datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
