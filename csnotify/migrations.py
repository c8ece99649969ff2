"""Ordered, named schema steps. Append new steps; never edit or reorder applied ones.

Each step is recorded in the ``migrations`` table, and ``PRAGMA user_version`` holds
how many have run, so opening an up-to-date store costs one pragma read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlite_utils import Database


def m001_initial(db: Database) -> None:
    db["subscriptions"].create(
        {
            "id": int,
            "name": str,
            "patterns": str,  # JSON list of type globs
            "level": str,
            "filters": str,  # JSON list of "field=value" / "field~regex"
            "format": str,
            "key": str,
            "title": str,
            "body": str,
            "enabled": int,
            "created": str,
            "updated": str,
        },
        pk="id",
        not_null={"name", "patterns", "level", "filters", "format", "enabled"},
    )
    db["subscriptions"].create_index(["name"], unique=True)
    db["endpoints"].create(
        {
            "id": int,
            "subscription_id": int,
            "position": int,
            "uri": str,
            "enabled": int,
            "consecutive_failures": int,
            "total_failures": int,
            "total_successes": int,
            "last_error": str,
            "last_error_at": str,
            "last_success_at": str,
            "disabled_reason": str,
        },
        pk="id",
        foreign_keys=[("subscription_id", "subscriptions", "id")],
        not_null={"subscription_id", "uri", "enabled"},
        defaults={
            "consecutive_failures": 0,
            "total_failures": 0,
            "total_successes": 0,
            "enabled": 1,
        },
    )
    db["endpoints"].create_index(["subscription_id", "uri"], unique=True)
    db["deliveries"].create(
        {
            "id": int,
            "endpoint_id": int,
            "subscription": str,
            "endpoint": str,
            "event_id": str,
            "event_type": str,
            "at": str,
            "attempts": int,
            "status": str,  # delivered | failed | muted | ...
            "http_status": int,
            "latency_ms": float,
            "error": str,
            "webhook_id": str,
            "payload": str,
        },
        pk="id",
    )
    db["deliveries"].create_index(["endpoint_id", "id"])
    db["cursors"].create({"source": str, "position": str, "updated": str}, pk="source")
    db["seen_events"].create({"event_id": str, "seen_at": str}, pk="event_id")
    db["seen_events"].create_index(["seen_at"])


def m002_operator_control(db: Database) -> None:
    """Mutes, per-endpoint rate limits, grouping, pending digests, and what the trimmed
    delivery log no longer holds (for redeliver's report)."""
    db["subscriptions"].add_column("group_wait", float, not_null_default=0.0)
    db["endpoints"].add_column("max_per_minute", int)  # NULL: the default for its kind
    db["endpoints"].add_column("total_muted", int, not_null_default=0)
    db["endpoints"].add_column("total_folded", int, not_null_default=0)
    # AUTOINCREMENT: the id of an ended mute is never given to a new one.
    db.execute(
        "CREATE TABLE mutes ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " subscription TEXT,"  # NULL: every subscription
        " endpoint TEXT,"  # NULL: every endpoint of the subscription(s)
        " pattern TEXT,"  # NULL: every event type
        " reason TEXT NOT NULL,"
        " created TEXT NOT NULL,"
        " until TEXT NOT NULL)"  # UTC ISO 8601; the mute ends by itself then
    )
    db["batches"].create(
        {
            "endpoint_id": int,
            "kind": str,  # group | digest
            "due": float,  # unix time it is sent at (or after)
            "doc": str,  # JSON: counts by type, the events listed
        },
        pk="endpoint_id",
    )
    db["trimmed"].create(
        {"endpoint_id": int, "minute": str, "status": str, "count": int},
        pk=("endpoint_id", "minute", "status"),
    )


MIGRATIONS: list[tuple[str, Callable[[Database], None]]] = [
    ("m001_initial", m001_initial),
    ("m002_operator_control", m002_operator_control),
]
