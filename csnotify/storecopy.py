"""``csnotify store copy``: a whole store into another one, usually a SQLite file into a
MariaDB/MySQL or PostgreSQL database, so that a single-host set-up becomes the shared
state of several listeners (issue 15).

Everything that is state goes: subscriptions, endpoints with their counters and switches,
mutes, pending digests and groups, pacing windows, the pending deliveries with their
retry schedule, the delivery log and what was trimmed from it, cursors, seen event ids,
names read from the API, the API's tokens (their hashes). Not copied: which processes
used the source (listener statistics, `csnotify serve` rows), so that `status` on the
target shows only what runs on it. Ids are kept (endpoints, the log and the
pending deliveries refer to them). The source is read in one transaction (a snapshot,
even while a listener writes to it); the target is written in one transaction, so a copy
that fails leaves it as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from csnotify.errors import BadInput

if TYPE_CHECKING:
    from csnotify.store import Store

# In an order that satisfies the foreign keys (endpoints refer to subscriptions).
TABLES = (
    "subscriptions", "endpoints", "mutes", "batches", "pacing", "trimmed", "pending",
    "deliveries", "cursors", "seen_events", "names", "api_tokens",
)  # fmt: skip
HELD = (*TABLES, "listeners")  # what makes a target not empty (and --replace clears)
PROCESSES = "source LIKE 'serve:%'"  # cursors rows of processes, not positions
NUMBERED = ("subscriptions", "endpoints", "mutes", "pending", "deliveries")  # ids a server makes
CHUNK = 500


def held(store: Store) -> dict[str, int]:
    """Rows of each table that has any."""
    counts = {}
    for table in HELD:
        (n,) = store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
        if n:
            counts[table] = int(n)
    return counts


def _refuse_running(target: Store) -> None:
    """--replace under a listener that runs on the target would change its state beneath
    it (its subscriptions, claims and counters)."""
    from csnotify.status import running_listeners
    from csnotify.store import SourceState

    running = running_listeners(SourceState(target))
    if running:
        run = running[0]
        raise BadInput(
            f"--to {target.location} is in use: a {run.get('source')} listener runs on it"
            f" (host {run.get('host')}, pid {run.get('pid')}); stop it first, then copy"
            " with --replace"
        )


def copy_store(source: Store, target: Store, replace: bool = False) -> dict[str, int]:
    """Copy every table of ``source`` into ``target``; rows copied by table. A target that
    holds anything is refused unless ``replace`` (its rows are then deleted first, in the
    same transaction)."""
    if source.location == target.location:
        raise BadInput(f"--to {target.location} is the store being copied; give another one")
    there = held(target)
    if there and replace:
        _refuse_running(target)
    if there and not replace:
        shown = ", ".join(f"{n} {t}" for t, n in there.items())
        raise BadInput(
            f"{target.location} is not empty ({shown}); give an empty database, or --replace"
            " to overwrite what it holds"
        )
    copied: dict[str, int] = {}
    with _snapshot(source), target.transaction():
        for table in reversed(HELD) if replace else ():
            target.conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
        for table in TABLES:
            copied[table] = _copy_table(source, target, table)
        target.touch()  # listeners already running on the target load it all again
        if target.dialect.name == "postgresql":  # identities go on after the copied ids
            for table in NUMBERED:
                target.conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"  # noqa: S608
                    f" (SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
                )
    return copied


def _copy_table(source: Store, target: Store, table: str) -> int:
    cursor = source.conn.execute(f"SELECT * FROM {table} LIMIT 0")  # noqa: S608
    cursor.fetchall()
    # a server's insertion order (seen_events) is made anew, in the order copied
    columns = [d[0] for d in cursor.description if d[0] != "seq"]
    order = source.dialect.sequence if table == "seen_events" else "1"
    if table in NUMBERED:
        order = "id"
    names = ", ".join(f'"{c}"' for c in columns)
    where = f" WHERE NOT ({PROCESSES})" if table == "cursors" else ""
    rows = source.conn.execute(f"SELECT {names} FROM {table}{where} ORDER BY {order}")  # noqa: S608
    insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608
    if table == "pending":  # claims of the source's listeners end with the move
        owner, lease = columns.index("owner"), columns.index("lease")
    count = 0
    while True:
        chunk = [tuple(r) for r in rows.fetchmany(CHUNK)]
        if not chunk:
            return count
        if table == "pending":
            chunk = [
                tuple(None if i in (owner, lease) else v for i, v in enumerate(r)) for r in chunk
            ]
        target.conn.executemany(insert, chunk)
        count += len(chunk)


@contextmanager
def _snapshot(store: Store) -> Iterator[None]:
    """A read transaction on a SQLite source: what a listener commits meanwhile is not
    seen half-way. A server source is read in autocommit (copying from one is rare)."""
    if store.dialect.name != "sqlite":
        yield
        return
    store.conn.execute("BEGIN")
    try:
        yield
    finally:
        store.conn.execute("COMMIT")
