"""The server's zone: wall-clock times CloudStack reads safely, whatever it makes of a
repeated hour, and offsets learned from ``created``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from csnotify.errors import BadInput
from csnotify.servertime import ServerClock, host_zone, offset_of, offset_text, parse_zone
from csnotify.simulator.server import parse_api_date

NEW_YORK = ZoneInfo("America/New_York")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "offset"),
    [("UTC", "+0000"), ("+05:30", "+0530"), ("-0500", "-0500"), ("UTC+1", "+0100"),
     ("Asia/Kolkata", "+0530")],
)  # fmt: skip
def test_zones_by_name_or_offset(text: str, offset: str) -> None:
    zone = parse_zone(text)
    assert offset_text(zone.utcoffset(datetime(2026, 1, 15)) or timedelta(0)) == offset  # noqa: DTZ001


@pytest.mark.parametrize("text", ["Mars/Olympus", "+15:00", "../etc/passwd", "", "nowhere"])
def test_unknown_zones_are_bad_input(text: str) -> None:
    with pytest.raises(BadInput, match="time zone"):
        parse_zone(text)


def test_learned_offset_gives_the_servers_wall_clock() -> None:
    clock = ServerClock()
    assert clock.start(utc("2026-05-14 10:22:31")) == "2026-05-13 22:22:31"  # unknown: -12h
    assert clock.end(utc("2026-05-14 10:22:31")) == "2026-05-15 00:22:31"  # unknown: +14h
    clock.learn([{"created": "2026-05-14T05:22:31-0500"}, {"created": "2026-05-14T05:00:00-0400"}])
    assert clock.describe() == "-0500"  # the newest row's
    assert clock.start(utc("2026-05-14 10:22:31")) == "2026-05-14 05:22:31"
    assert clock.end(utc("2026-05-14 10:22:31")) == "2026-05-14 05:22:31"
    clock.offset = timedelta(hours=5, minutes=30)
    assert clock.start(utc("2026-05-14 10:22:31")) == "2026-05-14 15:52:31"


def test_learned_offset_can_step_back_in_the_hours_a_dst_change_can_happen() -> None:
    # 01:59:58 EDT: if the zone fell back meanwhile, the server reads that wall time as
    # EST, an hour later; a start an hour earlier is safe either way.
    clock = ServerClock(offset=timedelta(hours=-4))
    assert clock.unsure(utc("2026-11-01 05:59:58"))
    assert not clock.unsure(utc("2026-11-01 09:00:00"))
    assert clock.start(utc("2026-11-01 05:59:58")) == "2026-11-01 01:59:58"
    assert clock.start(utc("2026-11-01 05:59:58"), back=True) == "2026-11-01 00:59:58"
    assert clock.end(utc("2026-11-01 05:59:58")) == "2026-11-01 01:59:58"
    assert not ServerClock(zone=NEW_YORK).unsure(utc("2026-11-01 05:59:58"))


@pytest.mark.parametrize(
    "moment",
    ["2026-11-01 05:30:00", "2026-11-01 06:30:00", "2026-11-01 04:59:59", "2026-03-08 07:30:00",
     "2026-03-08 06:59:59", "2026-07-01 12:00:00"],
)  # fmt: skip
def test_named_zone_is_safe_across_dst(moment: str) -> None:
    clock = ServerClock(zone=NEW_YORK)
    at = utc(moment)
    start = parse_api_date(clock.start(at), "startdate", NEW_YORK)
    end = parse_api_date(clock.end(at), "enddate", NEW_YORK)
    assert start <= at <= end  # the simulator reads a repeated hour as Java does
    assert at - start <= timedelta(hours=1) and end - at <= timedelta(hours=1)
    for fold in (0, 1):  # and whichever instant a server picks
        wall = datetime.strptime(clock.start(at), "%Y-%m-%d %H:%M:%S")  # noqa: DTZ007
        assert wall.replace(tzinfo=NEW_YORK, fold=fold).astimezone(UTC) <= at


def test_cloudstack_date_formats_in_the_servers_zone() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    assert parse_api_date("2026-05-14 10:00:00", "startdate", kolkata) == utc("2026-05-14 04:30")
    assert parse_api_date("2026-05-14", "startdate", kolkata) == utc("2026-05-13 18:30")
    assert parse_api_date("2026-05-14", "enddate", kolkata) == utc("2026-05-14 18:29:59")
    assert parse_api_date("2026-05-14T10:00:00-0500", "enddate", kolkata) == utc("2026-05-14 15:00")
    # the lenient yyyy-MM-dd parser reads the date of anything else that starts with one
    assert parse_api_date("2026-05-14T10:00:00Z", "startdate", UTC) == utc("2026-05-14 00:00")
    # DST ends in New York: 01:30 happens twice; Java's Calendar takes standard time
    assert parse_api_date("2026-11-01 01:30:00", "startdate", NEW_YORK) == utc("2026-11-01 06:30")
    with pytest.raises(ValueError):
        parse_api_date("yesterday", "startdate", UTC)


def test_offset_of_created() -> None:
    assert offset_of("2024-05-14T05:22:31-0500") == timedelta(hours=-5)
    assert offset_of("2024-05-14T10:52:31+0530") == timedelta(hours=5, minutes=30)
    assert offset_of("garbage") is None and offset_of(None) is None


def test_the_host_zone_is_read_from_the_environment_given() -> None:
    """TZ as the caller's environment has it (the CLI's terminal's), as a JVM reads it."""
    assert host_zone({"TZ": "America/New_York"}) == NEW_YORK
    assert host_zone({"TZ": ":Asia/Tokyo"}) == ZoneInfo("Asia/Tokyo")
