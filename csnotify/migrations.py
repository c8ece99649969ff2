"""Ordered, named schema steps. Append new steps (a function decorated ``@migration``,
named for what it does after its number); never edit or reorder applied ones.

Each step is recorded in the ``migrations`` table, and ``PRAGMA user_version`` holds
how many have run, so opening an up-to-date store costs one pragma read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlite_utils import Database

Step = Callable[["Database"], None]
MIGRATIONS: list[tuple[str, Step]] = []  # in the order they run


def migration(step: Step) -> Step:
    """Register ``step`` as the next migration, under its function's name."""
    MIGRATIONS.append((step.__name__, step))
    return step


@migration
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


@migration
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


@migration
def m003_outbox(db: Database) -> None:
    """Pending deliveries: an event is accepted once its deliveries are written here, and
    each endpoint's worker sends from this table, so nothing accepted is lost in a crash and
    retries survive a restart. Endpoints get a strict-order switch and a count of the
    deliveries given up because their backlog was full."""
    db.execute(
        "CREATE TABLE pending ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"  # acceptance order; never reused
        " endpoint_id INTEGER NOT NULL,"
        " event_id TEXT NOT NULL,"
        " event_type TEXT NOT NULL,"
        " resource TEXT NOT NULL,"  # events of one resource go to an endpoint in id order
        " payload TEXT NOT NULL,"  # the normalised event (JSON)
        " raw_text TEXT,"  # the bus body as received, for --format cloudstack
        " webhook_id TEXT,"  # redeliver: the recorded id; NULL: derived as usual
        " accepted REAL NOT NULL,"  # unix time
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " next_at REAL NOT NULL,"  # unix time of the next attempt
        " last_error TEXT,"
        " owner TEXT,"  # the process working on it (host:pid:nonce), or NULL
        " lease REAL)"  # the owner's claim ends then unless renewed
    )
    db.execute("CREATE INDEX pending_endpoint ON pending (endpoint_id, id)")
    db["endpoints"].add_column("strict_order", int, not_null_default=0)
    db["endpoints"].add_column("total_dropped", int, not_null_default=0)


@migration
def m004_outcomes_and_names(db: Database) -> None:
    """Issue 13. Subscriptions choose CloudStack categories and states; existing ones get
    the new default (both empty: each operation's outcome, and alerts). Names resolved
    from UUIDs through the API are kept with the time they were read. A seen bus message
    keeps its content id, so a broker redelivery is told from a twin CloudStack really
    published twice."""
    db["subscriptions"].add_column("categories", str, not_null_default="[]")
    db["subscriptions"].add_column("states", str, not_null_default="[]")
    db["seen_events"].add_column("digest", str)
    db["seen_events"].add_column("acked", int, not_null_default=0)
    db.execute("CREATE INDEX seen_events_digest ON seen_events (digest)")
    db["names"].create(
        {"kind": str, "uuid": str, "doc": str, "fetched": float}, pk=("kind", "uuid")
    )


@migration
def m005_api_tokens_and_owners(db: Database) -> None:
    """Issue 16. Bearer tokens of the HTTP API (``csnotify token create``): only a hash of
    each secret is kept. A subscription made through the API has an owner: the account
    (or domain) it belongs to; NULL for those made at a shell, which only an operator or a
    global caller sees."""
    db["api_tokens"].create(
        {
            "id": str,  # tok_<hex>: shown by 'token list', given to 'token revoke'
            "digest": str,  # sha256 of the secret part, hex
            "account": str,
            "domain": str,  # CloudStack domain path, e.g. ROOT/sales
            "scope": str,  # account | domain | global
            "created": str,
            "expires": str,  # UTC ISO 8601, or NULL: never
            "revoked": str,  # UTC ISO 8601, or NULL
        },
        pk="id",
        not_null={"digest", "account", "domain", "scope", "created"},
    )
    db["subscriptions"].add_column("owner_scope", str)  # account | domain | global | NULL
    db["subscriptions"].add_column("owner_account", str)
    db["subscriptions"].add_column("owner_domain", str)


@migration
def m006_shared_state(db: Database) -> None:
    """Issue 15: several listeners share one store. Each listener run has a row of its own
    (statistics and heartbeat; they were ``listen:`` rows in ``cursors``, one per source, so
    two listeners overwrote each other); ``settings_version`` is bumped in the transaction
    of every change of subscriptions, endpoints' switches or mutes, so listeners see a
    change with one cheap read; each delivery records the listener that made it; each
    rate-limited endpoint's recent sends are kept for every listener to count."""
    db["listeners"].create(
        {"id": str, "host": str, "pid": int, "source": str, "started": str, "updated": str,
         "doc": str},
        pk="id",
    )  # fmt: skip
    for row in list(db.query("SELECT source, position, updated FROM cursors")):
        if row["source"].startswith("listen:"):
            doc = json.loads(row["position"])
            source = row["source"].removeprefix("listen:")
            db["listeners"].insert(
                {"id": f"{doc.get('host')}:{doc.get('pid')}:{source}", "host": doc.get("host"),
                 "pid": doc.get("pid"), "source": source, "started": doc.get("started"),
                 "updated": row["updated"], "doc": row["position"]}
            )  # fmt: skip
    db.execute("DELETE FROM cursors WHERE source LIKE 'listen:%'")
    db["settings_version"].create({"id": int, "version": int}, pk="id")
    db.execute("INSERT INTO settings_version (id, version) VALUES (1, 0)")
    db["deliveries"].add_column("listener", str)  # host:pid of the listener that sent it
    # Rate limits hold across listeners: the send times (JSON list, unix) of the last 60 s.
    db["pacing"].create({"endpoint_id": int, "sent": str}, pk="endpoint_id")
    db["batches"].add_column("owner", str)  # the listener holding it (NULL: an earlier one)


@migration
def m007_listeners_share_work(db: Database) -> None:
    """Issue 15: per-resource order holds across listeners, and each listener's pending
    batch is kept. A listener looks up, for the resources of the rows it writes or claims,
    whether another process holds an earlier row of the same resource for the same
    endpoint: an index on (endpoint, resource, id) keeps that a short read. Ordering keys
    longer than the index allows (hand-made events only) are kept as their hash, as
    csnotify.delivery.intake.resource_key makes new ones. A batch row belongs to an
    endpoint and its holder (two listeners may each hold one for an endpoint; the row was
    the endpoint's alone, so one overwrote the other); an earlier run's has holder ''."""
    import hashlib

    long = list(db.query("SELECT id, resource FROM pending WHERE LENGTH(resource) > 190"))
    for row in long:
        digest = hashlib.sha256(row["resource"].encode("utf-8", "surrogatepass")).hexdigest()
        db.conn.execute(
            "UPDATE pending SET resource = ? WHERE id = ?", ("sha256:" + digest, row["id"])
        )
    db.execute("CREATE INDEX pending_resource ON pending (endpoint_id, resource, id)")
    batches = list(db.query("SELECT endpoint_id, kind, due, doc, owner FROM batches"))
    db.execute("DROP TABLE batches")
    db["batches"].create(
        {"endpoint_id": int, "kind": str, "due": float, "doc": str, "owner": str},
        pk=("endpoint_id", "owner"),
        not_null={"kind", "due", "doc"},
    )
    for row in batches:
        db["batches"].insert({**row, "owner": row["owner"] or ""})
