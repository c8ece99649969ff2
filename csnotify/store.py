"""The store: subscriptions, endpoints with their counters, the bounded delivery log,
source cursors and recently seen event ids; in SQLite by default, or in MariaDB/MySQL or
PostgreSQL given as a URL (csnotify/servers.py), with each query written once
(csnotify/dialects.py holds what differs).

Writes go through sqlite-utils inside ``BEGIN IMMEDIATE`` transactions, so a writer waits
for the lock (busy timeout) instead of failing half-way. Reads use the plain sqlite3
connection: importing sqlite-utils costs about 50 ms, and ``csnotify list`` must start
fast (see bench/startup.py). The file is created 0600 in a 0700 directory: it holds
signing keys.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import cached_property
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from csnotify import APP_NAME
from csnotify.clock import log_now, log_time, utc_iso
from csnotify.dialects import SQLITE, Dialect, quoted
from csnotify.errors import BadInput, CsnotifyError, Unreachable
from csnotify.files import chosen_path, create_private_file, tighten, xdg_home
from csnotify.matching import parse_filter
from csnotify.models import HELD, SENT, Endpoint, Mute, Status, Subscription

if TYPE_CHECKING:
    from sqlite_utils import Database

    from csnotify.servers import ServerConnection


BUSY_TIMEOUT_S = 30.0
MANY = 500  # rows in one multi-row statement


def in_chunks(values: Sequence[Any]) -> Iterator[tuple[Sequence[Any], str]]:
    """``values`` at most MANY at a time, each part with the ``?,?,...`` of its IN list."""
    for start in range(0, len(values), MANY):
        part = values[start : start + MANY]
        yield part, ",".join("?" * len(part))


def default_db_path(environ: Mapping[str, str]) -> Path:
    return xdg_home(environ, "XDG_DATA_HOME", ".local/share") / APP_NAME / f"{APP_NAME}.db"


def db_path(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    return chosen_path(explicit, environ, "CSNOTIFY_DB", default_db_path)


def is_url(target: str | os.PathLike[str] | None) -> bool:
    """``scheme://...``: a database server, not a file."""
    return bool(target) and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", str(target)) is not None


def chosen_store(explicit: str | None, environ: Mapping[str, str]) -> str | Path:
    """--db, else CSNOTIFY_DB, else the default file: a URL as given, a path resolved."""
    given = explicit or environ.get("CSNOTIFY_DB")
    return given if given and is_url(given) else db_path(explicit, environ)


def open_store(explicit: str | None, environ: Mapping[str, str], what: str | None = None) -> Store:
    """The store --db or CSNOTIFY_DB names (``what``: another option its errors name)."""
    target = chosen_store(explicit, environ)
    if isinstance(target, str):
        return Store.open_url(target, what)
    return Store.open(target, what)


class StoreBusy(CsnotifyError):
    pass


@dataclass
class DeliveryRecord:
    """The outcome of one delivery (all its attempts) to one endpoint."""

    endpoint_id: int
    subscription: str
    endpoint: str
    event_id: str
    event_type: str
    status: Status
    attempts: int
    at: str
    http_status: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    webhook_id: str | None = None
    payload: str | None = None
    listener: str | None = None  # host:pid of the listener that made it


class Store:
    def __init__(
        self,
        path: Path | None,
        conn: sqlite3.Connection | ServerConnection,
        dialect: Dialect = SQLITE,
        location: str | None = None,
    ) -> None:
        self.path = path  # None on a database server
        self.conn: Any = conn
        self.dialect = dialect
        self.location = location or str(path)  # as shown: a server's password masked
        self.notices: list[str] = []  # for the operator: what opening it changed

    @classmethod
    def open(cls, path: Path, what: str | None = None) -> Store:
        """The SQLite store, made or migrated; errors say to check ``what`` (None: --db or
        CSNOTIFY_DB)."""
        check = what or "--db or CSNOTIFY_DB"
        try:
            create_private_file(path)
            notices = [
                n
                for p in (
                    path,
                    path.with_name(path.name + "-wal"),
                    path.with_name(path.name + "-shm"),
                )
                if (n := tighten(p))
            ]
            conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            _refuse_foreign(conn, path)  # before anything, WAL mode included, is changed
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            store = cls(path, conn)
            store.notices = notices
            store.migrate()
        except sqlite3.DatabaseError as exc:
            raise BadInput(f"cannot use store {path}: {exc}; check {check}") from None
        except PermissionError as exc:
            raise BadInput(f"cannot open store {path}: {exc.strerror}") from None
        except OSError as exc:  # e.g. a directory that cannot be made (--db /proc/x)
            raise BadInput(
                f"cannot open store {path}: {exc.strerror or exc}; check {check}"
            ) from None
        return store

    @classmethod
    def peek(cls, path: Path) -> Store | None:
        """An existing SQLite store, read-only and as it is (not created, not migrated):
        for shell completion. None when there is none or it cannot be opened."""
        if not path.exists():
            return None
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        except sqlite3.Error:
            return None
        conn.row_factory = sqlite3.Row
        return cls(path, conn)

    @classmethod
    def open_url(cls, text: str, what: str | None = None) -> Store:
        """The store in a MariaDB/MySQL or PostgreSQL database, migrated; errors name
        ``what`` (None: --db / CSNOTIFY_DB, as parse_url does)."""
        from csnotify import servers
        from csnotify.migrations import MIGRATIONS

        url = servers.parse_url(text, what) if what else servers.parse_url(text)
        named = f" (check {what})" if what else ""
        try:
            conn = servers.connect(url)
        except Unreachable as exc:
            raise Unreachable(exc.message + named) from None
        try:
            servers.migrate(conn, MIGRATIONS)
        except CsnotifyError:
            conn.close()
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the user may not create tables
            conn.close()
            raise Unreachable(
                f"cannot use store {url}: {servers.reason(exc, url)}{named}"
            ) from None
        return cls(None, conn, url.dialect, str(url))

    def close(self) -> None:
        self.conn.close()

    @cached_property
    def db(self) -> Database:
        from sqlite_utils import Database

        return Database(self.conn, execute_plugins=False)

    # -- schema --------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        if self.dialect is not SQLITE:
            from csnotify.servers import applied_count

            return applied_count(self.conn)
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> list[str]:
        """Apply the steps this store lacks; returns their names."""
        from csnotify.migrations import MIGRATIONS

        if self.dialect is not SQLITE:
            from csnotify.servers import migrate

            return migrate(self.conn, MIGRATIONS)
        if self.schema_version == len(MIGRATIONS):
            return []
        if self.schema_version > len(MIGRATIONS):
            raise BadInput(
                f"store {self.path} has schema version {self.schema_version}, newer than this"
                f" csnotify knows ({len(MIGRATIONS)}); upgrade csnotify"
            )
        applied = []
        with self.transaction():
            version = self.schema_version  # another process may have migrated meanwhile
            if not self.db["migrations"].exists():
                self.db["migrations"].create({"name": str, "applied_at": str}, pk="name")
            for name, step in MIGRATIONS[version:]:
                step(self.db)
                self.db["migrations"].insert({"name": name, "applied_at": log_now()})
                applied.append(name)
            self.conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        return applied

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction that takes the lock up front, waiting up to the busy
        timeout; everything in it is committed together or not at all."""
        if self.dialect is not SQLITE:
            with self.conn.transaction():
                yield
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            self._refuse_read_only(exc)
            raise StoreBusy(
                f"store {self.path} stayed locked by another process for"
                f" {BUSY_TIMEOUT_S:g} s ({exc}); try again"
            ) from None
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                self._refuse_read_only(exc)
            raise

    def _refuse_read_only(self, exc: sqlite3.OperationalError) -> None:
        if "readonly" in str(exc) or "read-only" in str(exc):
            raise BadInput(
                f"store {self.path} is read-only for this user ({exc}); check the permissions"
                " of the file and its directory, or give another --db"
            ) from None

    def insert_id(self, sql: str, params: Sequence[Any]) -> int:
        """Run an INSERT made by ``dialect.insert``; the new row's id."""
        cursor = self.conn.execute(sql, params)
        return int(cursor.fetchone()[0] if self.dialect.returning_id else cursor.lastrowid or 0)

    def insert_ids(
        self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> list[int]:
        """Insert ``rows``; their new ids, in order. On a database server, as few
        multi-row INSERTs as can be (one round trip each, not one a row): PostgreSQL and
        MariaDB 10.5+ return the ids; MySQL numbers a multi-row INSERT's rows from the id it
        returns, auto_increment_increment apart, unless innodb_autoinc_lock_mode is 2
        (then: a row at a time)."""
        sql = self.dialect.insert(table, columns)
        if self.dialect is SQLITE:  # no round trips to save
            return [self.insert_id(sql, row) for row in rows]
        returning = self.conn.returns_ids()
        step = 1 if returning else self.conn.id_step()
        if not step:
            return [self.insert_id(sql, row) for row in rows]
        ids: list[int] = []
        marks = f"({', '.join('?' * len(columns))})"
        for start in range(0, len(rows), MANY):
            chunk = rows[start : start + MANY]
            many = (
                f"INSERT INTO {table} ({', '.join(quoted(c) for c in columns)})"  # noqa: S608
                f" VALUES {', '.join([marks] * len(chunk))}"
            )
            params = [value for row in chunk for value in row]
            if returning:  # rows get their ids in the order of VALUES
                got = self.conn.execute(many + " RETURNING id", params).fetchall()
                ids += sorted(int(r[0]) for r in got)
            else:
                first = int(self.conn.execute(many, params).lastrowid or 0)
                ids += range(first, first + step * len(chunk), step)
        return ids

    def insert_row(self, table: str, values: dict[str, Any]) -> int:
        return self.insert_id(self.dialect.insert(table, list(values)), list(values.values()))

    def touch(self) -> None:
        """Note a change listeners must load (subscriptions, endpoints' switches, mutes),
        inside the transaction that makes it: ``SourceState.changed`` reads this counter."""
        self.conn.execute("UPDATE settings_version SET version = version + 1 WHERE id = 1")

    def update_row(self, table: str, row_id: int, values: dict[str, Any]) -> None:
        sets = ", ".join(f"{quoted(c)} = ?" for c in values)
        self.conn.execute(
            f"UPDATE {table} SET {sets} WHERE id = ?",  # noqa: S608 - fixed names
            (*values.values(), row_id),
        )

    # -- subscriptions: reads --------------------------------------------------------

    def names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM subscriptions ORDER BY name")]

    def subscriptions(self) -> list[Subscription]:
        return self._load("", ())

    def subscription(self, name: str) -> Subscription | None:
        found = self._load("WHERE name = ?", (name,))
        return found[0] if found else None

    def _load(self, where: str, params: tuple[Any, ...]) -> list[Subscription]:
        rows = self.conn.execute(
            f"SELECT * FROM subscriptions {where} ORDER BY name",  # noqa: S608 - fixed clauses
            params,
        ).fetchall()
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        marks = ",".join("?" * len(ids))
        endpoints: dict[int, list[Endpoint]] = {i: [] for i in ids}
        for e in self.conn.execute(
            f"SELECT * FROM endpoints WHERE subscription_id IN ({marks})"  # noqa: S608
            " ORDER BY subscription_id, position",
            ids,
        ):
            endpoints[e["subscription_id"]].append(_endpoint(e))
        return [_subscription(r, endpoints[r["id"]]) for r in rows]

    # -- subscriptions: writes (inside transaction()) --------------------------------

    def insert(self, sub: Subscription) -> None:
        now = log_now()
        sub_id = self.insert_row("subscriptions", _subscription_row(sub, created=now, updated=now))
        self._write_endpoints(sub_id, sub.endpoints, {})
        self.touch()

    def save(self, old_name: str, sub: Subscription, endpoint_flags: bool = False) -> int:
        """Replace a subscription's settings and endpoint list, keeping the counters of
        endpoints that stay. Their enabled flags are written only with ``endpoint_flags``
        (import --replace), so an update never undoes an auto-disable made meanwhile."""
        row = self.conn.execute("SELECT id, created FROM subscriptions WHERE name = ?", (old_name,))
        sub_id, created = row.fetchone()
        if sub.name != old_name:  # mutes follow a renamed subscription
            self.conn.execute(
                "UPDATE mutes SET subscription = ? WHERE subscription = ?", (sub.name, old_name)
            )
        self.update_row("subscriptions", sub_id, _subscription_row(sub, created, log_now()))
        existing = {
            e["uri"]: e["id"]
            for e in self.conn.execute(
                "SELECT id, uri FROM endpoints WHERE subscription_id = ?", (sub_id,)
            )
        }
        keep = {ep.uri for ep in sub.endpoints}
        discarded = 0  # pending deliveries of the endpoints that go
        for uri, ep_id in existing.items():
            if uri not in keep:
                discarded += self.conn.execute(
                    "SELECT count(*) FROM pending WHERE endpoint_id = ?", (ep_id,)
                ).fetchone()[0]
                self.conn.execute("DELETE FROM endpoints WHERE id = ?", (ep_id,))
        self._forget_batches()
        self._write_endpoints(sub_id, sub.endpoints, existing, endpoint_flags)
        self.touch()
        return int(discarded)

    def _write_endpoints(
        self,
        sub_id: int,
        endpoints: list[Endpoint],
        existing: dict[str, int],
        endpoint_flags: bool = False,
    ) -> None:
        for position, ep in enumerate(endpoints):
            if ep.uri in existing:
                values: dict[str, Any] = {"position": position}
                values["max_per_minute"] = ep.max_per_minute
                values["strict_order"] = int(ep.strict_order)
                if endpoint_flags:
                    values |= {"enabled": int(ep.enabled), "disabled_reason": ep.disabled_reason}
                self.update_row("endpoints", existing[ep.uri], values)
            else:
                self.insert_row(
                    "endpoints",
                    {
                        "subscription_id": sub_id,
                        "position": position,
                        "uri": ep.uri,
                        "enabled": int(ep.enabled),
                        "disabled_reason": ep.disabled_reason,
                        "max_per_minute": ep.max_per_minute,
                        "strict_order": int(ep.strict_order),
                    },
                )

    def delete(self, name: str) -> None:
        self.conn.execute(
            "DELETE FROM endpoints WHERE subscription_id IN"
            " (SELECT id FROM subscriptions WHERE name = ?)",
            (name,),
        )
        self.conn.execute("DELETE FROM subscriptions WHERE name = ?", (name,))
        self.conn.execute("DELETE FROM mutes WHERE subscription = ?", (name,))
        self._forget_batches()
        self.touch()

    def _forget_batches(self) -> None:
        """Pending batches and deliveries of endpoints that no longer exist."""
        for table in ("batches", "pending"):
            self.conn.execute(
                f"DELETE FROM {table} WHERE endpoint_id NOT IN (SELECT id FROM endpoints)"  # noqa: S608
            )

    def set_subscription_enabled(self, name: str, enabled: bool) -> None:
        self.conn.execute(
            "UPDATE subscriptions SET enabled = ?, updated = ? WHERE name = ?",
            (int(enabled), log_now(), name),
        )
        self.touch()

    def set_endpoint_enabled(
        self, ep: Endpoint, enabled: bool, reset: bool = False, reason: str | None = None
    ) -> None:
        values: dict[str, Any] = {"enabled": int(enabled), "disabled_reason": reason}
        if enabled:  # what waited for it goes out now, not at its next scheduled retry
            self.conn.execute("UPDATE pending SET next_at = 0 WHERE endpoint_id = ?", (ep.id,))
        if reset:
            values |= {"consecutive_failures": 0, "total_failures": 0, "total_successes": 0}
            values |= {"last_error": None, "last_error_at": None}
        self.update_row("endpoints", ep.id, values)
        self.touch()

    # -- API tokens (csnotify/tokens.py) ---------------------------------------------

    def tokens(
        self, token_id: str | None = None, with_digest: bool = False
    ) -> list[dict[str, Any]]:
        cols = "id, account, domain, scope, created, expires, revoked"
        cols += ", digest" if with_digest else ""
        where = "WHERE id = ?" if token_id is not None else ""
        rows = self.conn.execute(
            f"SELECT {cols} FROM api_tokens {where} ORDER BY created, id",  # noqa: S608
            (token_id,) if token_id is not None else (),
        )
        return [dict(r) for r in rows]

    def insert_token(self, values: dict[str, Any]) -> None:
        columns = list(values)
        self.conn.execute(
            f"INSERT INTO api_tokens ({', '.join(columns)})"  # noqa: S608 - fixed names
            f" VALUES ({', '.join('?' * len(columns))})",
            list(values.values()),
        )

    def revoke_token(self, token_id: str, at: str) -> None:
        self.conn.execute("UPDATE api_tokens SET revoked = ? WHERE id = ?", (at, token_id))

    # -- mutes ---------------------------------------------------------------------

    def mutes(self) -> list[Mute]:

        rows = self.conn.execute("SELECT * FROM mutes ORDER BY id").fetchall()
        fields = ("subscription", "endpoint", "pattern", "reason", "created", "until")
        return [Mute(*(r[f] for f in fields), id=r["id"]) for r in rows]

    def insert_mute(self, mute: Mute) -> int:
        self.touch()
        return self.insert_id(
            self.dialect.insert(
                "mutes", ("subscription", "endpoint", "pattern", "reason", "created", "until")
            ),
            (mute.subscription, mute.endpoint, mute.pattern, mute.reason, mute.created,
             mute.until),
        )  # fmt: skip

    def end_mutes(self, ids: list[int], at: str) -> None:
        """End them at ``at``; they stay (for 'mutes --all') until they expire."""
        self.conn.executemany("UPDATE mutes SET until = ? WHERE id = ?", [(at, i) for i in ids])
        self.touch()

    def delete_expired_mutes(self, before: str) -> None:
        """Mutes that ended before ``before`` (kept a while so 'mutes --all' shows them)."""
        if self.conn.execute("DELETE FROM mutes WHERE until < ?", (before,)).rowcount:
            self.touch()


def _refuse_foreign(conn: sqlite3.Connection, path: Path) -> None:
    """A file with tables but none of ours is some other application's database."""
    if conn.execute("PRAGMA user_version").fetchone()[0]:
        return
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    if tables and "migrations" not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise BadInput(
            f"{path} is not a csnotify store (it holds tables {shown} of another"
            " application); give --db or CSNOTIFY_DB a csnotify store or a new file"
        )


def _subscription_row(sub: Subscription, created: str, updated: str) -> dict[str, Any]:
    return {
        "name": sub.name,
        "patterns": json.dumps(sub.patterns),
        "level": sub.level,
        "filters": json.dumps([str(f) for f in sub.filters]),
        "format": sub.format,
        "key": sub.key,
        "title": sub.title,
        "body": sub.body,
        "enabled": int(sub.enabled),
        "group_wait": sub.group_wait,
        "categories": json.dumps(sub.categories),
        "states": json.dumps(sub.states),
        "created": created,
        "updated": updated,
        "owner_scope": sub.owner_scope,
        "owner_account": sub.owner_account,
        "owner_domain": sub.owner_domain,
    }


def _subscription(row: Any, endpoints: list[Endpoint]) -> Subscription:
    return Subscription(
        id=row["id"],
        name=row["name"],
        patterns=json.loads(row["patterns"]),
        endpoints=endpoints,
        level=row["level"],
        filters=[parse_filter(f) for f in json.loads(row["filters"])],
        format=row["format"],
        key=row["key"],
        title=row["title"],
        body=row["body"],
        enabled=bool(row["enabled"]),
        group_wait=row["group_wait"],
        categories=json.loads(row["categories"]),
        states=json.loads(row["states"]),
        created=row["created"],
        updated=row["updated"],
        owner_scope=row["owner_scope"],
        owner_account=row["owner_account"],
        owner_domain=row["owner_domain"],
    )


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        id=row["id"],
        uri=row["uri"],
        enabled=bool(row["enabled"]),
        consecutive_failures=row["consecutive_failures"],
        total_failures=row["total_failures"],
        total_successes=row["total_successes"],
        last_error=row["last_error"],
        last_error_at=row["last_error_at"],
        last_success_at=row["last_success_at"],
        disabled_reason=row["disabled_reason"],
        max_per_minute=row["max_per_minute"],
        total_muted=row["total_muted"],
        total_folded=row["total_folded"],
        strict_order=bool(row["strict_order"]),
        total_dropped=row["total_dropped"],
    )


TRIMMED_KEPT_MINUTES = 31 * 24 * 60


def _minutes_ago(minutes: int) -> str:
    from datetime import UTC, datetime, timedelta

    return log_time(datetime.now(UTC) - timedelta(minutes=minutes))[:16]


RECORD_FIELDS = tuple(f.name for f in fields(DeliveryRecord))
_record_values = attrgetter(*RECORD_FIELDS)  # far cheaper than dataclasses.asdict


class PendingBatches:
    """Digests and groups held back, one per endpoint and holder (the listener run that
    folds events into it), so that a restart, or another listener, sends them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._save = store.dialect.upsert(
            "batches", ("endpoint_id", "owner", "kind", "due", "doc"), ("endpoint_id", "owner")
        )

    def write(
        self,
        batches: Sequence[tuple[int, tuple[str, float, str] | None]],
        holder: str,
        merged: Sequence[tuple[int, str]] = (),
    ) -> None:
        """The batches ``holder`` holds that changed (None: sent, so deleted), and those
        (endpoint id, holder) taken over and merged into them, deleted; inside a
        transaction the caller holds (the outbox's)."""
        conn = self.store.conn
        for endpoint_id, pending in batches:
            if pending is None:
                conn.execute(
                    "DELETE FROM batches WHERE endpoint_id = ? AND owner = ?", (endpoint_id, holder)
                )
            else:
                conn.execute(self._save, (endpoint_id, holder, *pending))
        if merged:
            conn.executemany("DELETE FROM batches WHERE endpoint_id = ? AND owner = ?", merged)

    def all(self) -> list[tuple[int, str, str, float, str]]:
        """Endpoint id, holder (a listener's run id; ``run/earlier`` while that run takes
        over an earlier holder's; '' for a run before holders were kept), kind, due, doc."""
        return [
            (r[0], r[1], r[2], r[3], r[4])
            for r in self.store.conn.execute(
                "SELECT endpoint_id, owner, kind, due, doc FROM batches ORDER BY endpoint_id, due"
            )
        ]

    def take(self, endpoint_id: int, holder: str, taker: str) -> bool:
        """Move a batch to ``taker`` unless another listener took it first."""
        return bool(
            self.store.conn.execute(
                "UPDATE batches SET owner = ? WHERE endpoint_id = ? AND owner = ?",
                (taker, endpoint_id, holder),
            ).rowcount
        )


class EndpointCounters:
    """What endpoints count of their outcomes (totals, consecutive failures, the last
    error), summed into one UPDATE per endpoint and batch, and the switch that turns an
    endpoint off; every listener of a store counts into the same rows."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def count(self, records: list[DeliveryRecord]) -> None:
        """Inside a transaction the caller holds; endpoints in id order (several
        listeners' transactions then never wait for each other in a circle)."""
        sent: dict[int, list[DeliveryRecord]] = {}
        held: dict[int, list[int]] = {}  # muted, folded, dropped
        for r in records:
            if r.status in SENT:
                sent.setdefault(r.endpoint_id, []).append(r)
            elif r.status in HELD:
                held.setdefault(r.endpoint_id, [0, 0, 0])[HELD.index(r.status)] += 1
        for endpoint_id in sorted(sent.keys() | held.keys()):
            if endpoint_id in sent:
                self._add(endpoint_id, sent[endpoint_id])
            if endpoint_id in held:
                self.store.conn.execute(
                    "UPDATE endpoints SET total_muted = total_muted + ?,"
                    " total_folded = total_folded + ?, total_dropped = total_dropped + ?"
                    " WHERE id = ?",
                    (*held[endpoint_id], endpoint_id),
                )

    def _add(self, endpoint_id: int, rows: list[DeliveryRecord]) -> None:
        """One UPDATE of the endpoint's counters for these outcomes."""
        ok = [r for r in rows if r.status == Status.DELIVERED]
        bad = [r for r in rows if r.status == Status.FAILED]
        last_ok = max((r.at for r in ok), default=None)
        trailing = [r for r in bad if last_ok is None or r.at > last_ok]
        consecutive = "0" if ok else "consecutive_failures"
        last_bad = bad[-1] if bad else None
        self.store.conn.execute(
            f"UPDATE endpoints SET total_successes = total_successes + ?,"  # noqa: S608
            f" total_failures = total_failures + ?,"
            f" consecutive_failures = {consecutive} + ?,"
            " last_success_at = COALESCE(?, last_success_at),"
            " last_error = COALESCE(?, last_error), last_error_at = COALESCE(?, last_error_at)"
            " WHERE id = ?",
            (
                len(ok),
                len(bad),
                len(trailing),
                last_ok,
                last_bad.error if last_bad else None,
                last_bad.at if last_bad else None,
                endpoint_id,
            ),
        )

    def switch_off(self, endpoint_id: int, reason: str, failures: int = 0) -> bool:
        """Switch the endpoint off if it is on (and, with ``failures``, has failed that many
        times in a row, counted by every listener); True if this call did it, so that one
        listener of several says so and tells failures.notify. Inside the caller's
        transaction, after the failures are counted."""
        done = self.store.conn.execute(
            "UPDATE endpoints SET enabled = 0, disabled_reason = ?"
            " WHERE id = ? AND enabled = 1 AND consecutive_failures >= ?",
            (reason, endpoint_id, failures),
        ).rowcount
        if done:
            self.store.touch()
        return bool(done)

    def failing(self, endpoint_ids: list[int]) -> dict[int, tuple[bool, int]]:
        """(enabled, consecutive failures) of these endpoints, as every listener left them."""
        if not endpoint_ids:
            return {}
        rows = self.store.conn.execute(
            "SELECT id, enabled, consecutive_failures FROM endpoints"  # noqa: S608
            f" WHERE id IN ({','.join('?' * len(endpoint_ids))})",
            endpoint_ids,
        )
        return {r[0]: (bool(r[1]), int(r[2])) for r in rows}


class Untrimmed:
    """Rows this process wrote to a bounded table, per key, since it last trimmed that key.
    A trim costs statements (on a server, round trips) in the transaction that every
    delivery waits on, so a table is trimmed once ``every`` more rows of a key are written,
    and at the end of a run (``take``), not at every commit."""

    def __init__(self) -> None:
        self.counts: dict[Any, int] = {}

    def due(self, key: Any, written: int, every: int) -> bool:
        """Note ``written`` more rows of ``key``; True (and start over) when it is due."""
        count = self.counts.get(key, 0) + written
        if count >= every:
            self.counts.pop(key, None)
            return True
        self.counts[key] = count
        return False

    def take(self) -> list[Any]:
        """The keys written since their last trim; forgotten here."""
        keys, self.counts = sorted(self.counts), {}
        return keys


class DeliveryLog:
    """The log of delivery outcomes, trimmed to ``log_max`` rows per endpoint (what is
    trimmed is counted by the minute), and what ``deliveries`` and ``redeliver`` read.
    A running listener trims an endpoint's log once it has written ``log_max`` more rows
    of it, and again when it stops: the log holds up to twice ``log_max`` rows (more with
    several listeners) between trims."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.untrimmed = Untrimmed()
        self._count_trimmed = store.dialect.upsert(
            "trimmed",
            ("endpoint_id", "minute", "status", "count"),
            ("endpoint_id", "minute", "status"),
            add=("count",),
            rows="SELECT endpoint_id, substr(at, 1, 16), status, count(*) FROM deliveries"
            " WHERE endpoint_id = ? AND id <= ? GROUP BY endpoint_id, substr(at, 1, 16), status",
        )

    def write(self, records: list[DeliveryRecord], log_max: int) -> None:
        """Inside a transaction the caller holds (the outbox's)."""
        self.store.conn.executemany(
            f"INSERT INTO deliveries ({', '.join(RECORD_FIELDS)})"  # noqa: S608 - fixed names
            f" VALUES ({', '.join('?' * len(RECORD_FIELDS))})",
            [_record_values(r) for r in records],
        )
        written = Counter(r.endpoint_id for r in records)
        for endpoint_id in sorted(written):
            if self.untrimmed.due(endpoint_id, written[endpoint_id], log_max):
                self._trim(endpoint_id, log_max)

    def trim_written(self, log_max: int) -> None:
        """Trim every endpoint written since its last trim (inside a transaction the
        caller holds): the end of a run."""
        for endpoint_id in self.untrimmed.take():
            self._trim(endpoint_id, log_max)

    def _trim(self, endpoint_id: int, log_max: int) -> None:
        """Keep the newest ``log_max`` rows; count what goes, by minute and status, so that
        redeliver can say how much of a window the log no longer holds."""
        conn = self.store.conn
        row = conn.execute(
            "SELECT id FROM deliveries WHERE endpoint_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
            (endpoint_id, log_max),
        ).fetchone()
        if row is None:
            return
        conn.execute(self._count_trimmed, (endpoint_id, row[0]))
        conn.execute(
            "DELETE FROM deliveries WHERE endpoint_id = ? AND id <= ?", (endpoint_id, row[0])
        )
        conn.execute(
            "DELETE FROM trimmed WHERE endpoint_id = ? AND minute < ?",
            (endpoint_id, _minutes_ago(TRIMMED_KEPT_MINUTES)),
        )

    def rows(
        self, subscription: str | None = None, failed: bool = False, limit: int = 50
    ) -> list[dict[str, Any]]:
        clauses, params = [], []
        if subscription is not None:
            clauses.append("subscription = ?")
            params.append(subscription)
        if failed:
            clauses.append("status = ?")
            params.append(Status.FAILED)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.store.conn.execute(
            "SELECT at, subscription, endpoint, event_id, event_type, status, attempts,"  # noqa: S608
            f" http_status, latency_ms, error, webhook_id, listener FROM deliveries {where}"
            " ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [dict(r) for r in rows]

    def window(
        self,
        endpoint_ids: list[int],
        since: str | None,
        until: str | None,
        failed: bool,
    ) -> list[Any]:
        """Messages sent to these endpoints between ``since`` and ``until`` (ISO, UTC),
        oldest first, one per event and endpoint (its latest outcome), with their payload;
        with ``failed`` only those whose latest outcome is a failure."""
        clauses, params = _window_clauses("at", since, until)
        statuses = _message_statuses(failed)
        marks = ",".join("?" * len(endpoint_ids))
        return self.store.conn.execute(
            "SELECT * FROM deliveries WHERE id IN (SELECT MAX(id) FROM deliveries"  # noqa: S608
            f" WHERE endpoint_id IN ({marks}){clauses} GROUP BY endpoint_id, event_id)"
            f" AND status IN ({','.join('?' * len(statuses))}) ORDER BY id",
            (*endpoint_ids, *params, *statuses),
        ).fetchall()

    def trimmed(
        self, endpoint_ids: list[int], since: str | None, until: str | None, failed: bool
    ) -> int:
        """How many deliveries in the window were trimmed from the log (counted by the
        minute, for the last 31 days)."""
        clauses, params = _window_clauses(
            "minute", since and since[:16], until and until[:16], _message_statuses(failed)
        )
        marks = ",".join("?" * len(endpoint_ids))
        row = self.store.conn.execute(
            f"SELECT COALESCE(SUM(count), 0) FROM trimmed WHERE endpoint_id IN ({marks})"  # noqa: S608
            f"{clauses}",
            (*endpoint_ids, *params),
        ).fetchone()
        return int(row[0])


def _message_statuses(failed: bool) -> tuple[str, ...]:
    """Outcomes of messages actually sent (muted and folded events were not)."""
    return (Status.FAILED,) if failed else SENT


def _window_clauses(
    column: str, since: str | None, until: str | None, statuses: tuple[str, ...] = ()
) -> tuple[str, list[Any]]:
    clauses, params = "", []
    if since is not None:
        clauses += f" AND {column} >= ?"
        params.append(since)
    if until is not None:
        clauses += f" AND {column} <= ?"
        params.append(until)
    if statuses:
        clauses += f" AND status IN ({','.join('?' * len(statuses))})"
        params += statuses
    return clauses, params


def backlog(store: Store) -> dict[int, dict[str, object]]:
    """Per endpoint id: pending deliveries, when the oldest was accepted, when the next
    retry is due (UTC ISO; None while none has failed yet), and the last error of the
    retry due first."""
    from datetime import UTC, datetime

    def iso(t: float | None) -> str | None:
        return None if t is None else utc_iso(datetime.fromtimestamp(t, UTC))

    rows = store.conn.execute(
        "SELECT endpoint_id, count(*), min(accepted),"
        " min(CASE WHEN attempts > 0 THEN next_at END),"
        " (SELECT last_error FROM pending q WHERE q.endpoint_id = p.endpoint_id"
        "  AND attempts > 0 ORDER BY next_at LIMIT 1)"
        " FROM pending p GROUP BY endpoint_id"
    ).fetchall()
    return {
        r[0]: {
            "backlog": r[1],
            "oldest_pending": iso(r[2]),
            "next_attempt": iso(r[3]),
            "pending_error": r[4],
        }
        for r in rows
    }


NO_BACKLOG = {"backlog": 0, "oldest_pending": None, "next_attempt": None, "pending_error": None}


class NameStore:
    """Names read from CloudStack's API by UUID (``names.py``), kept between runs: the
    answer (or None: the API knows no such UUID) and when it was read."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def load(self, since: float) -> list[tuple[str, str, dict[str, Any] | None, float]]:
        rows = self.store.conn.execute(
            "SELECT kind, uuid, doc, fetched FROM names WHERE fetched >= ?", (since,)
        )
        return [(r[0], r[1], json.loads(r[2]) if r[2] else None, r[3]) for r in rows]

    def save(self, rows: list[tuple[str, str, dict[str, Any] | None, float]]) -> None:
        with self.store.transaction():
            self.store.conn.executemany(
                self.store.dialect.upsert(
                    "names", ("kind", "uuid", "doc", "fetched"), keys=("kind", "uuid")
                ),
                [(k, u, json.dumps(d) if d is not None else None, t) for k, u, d, t in rows],
            )


class SourceState:
    """What sources keep between runs: cursors (api) and recently seen event ids (amqp
    redeliveries), the latter bounded to ``max_seen`` rows (trimmed once 1% of that has
    been written, and when a run ends: up to 1% more between trims)."""

    def __init__(self, store: Store, max_seen: int = 100_000) -> None:
        self.store = store
        self.max_seen = max_seen
        self._data_version: Any = None
        self.untrimmed = Untrimmed()

    def cursor(self, source: str) -> dict[str, Any] | None:
        row = self.store.conn.execute(
            "SELECT position FROM cursors WHERE source = ?", (source,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def save_cursor(self, source: str, position: dict[str, Any]) -> None:
        with self.store.transaction():
            self.write_cursor(source, position)

    def write_cursor(self, source: str, position: dict[str, Any]) -> None:
        """``save_cursor`` inside a transaction the caller holds."""
        self.store.conn.execute(
            self.store.dialect.upsert("cursors", ("source", "position", "updated"), ("source",)),
            (source, json.dumps(position), log_now()),
        )

    def cursors(self) -> dict[str, dict[str, Any]]:
        return {
            r["source"]: {"position": json.loads(r["position"]), "updated": r["updated"]}
            for r in self.store.conn.execute("SELECT source, position, updated FROM cursors")
        }

    def accepted(self, digest: str) -> list[str]:
        """Ids of the accepted bus messages with this content id that may not have been
        acknowledged (see ``mark_acknowledged``), oldest first."""
        rows = self.store.conn.execute(
            f"SELECT event_id FROM seen_events WHERE digest = ? AND acked = 0"  # noqa: S608
            f" ORDER BY {self.store.dialect.sequence}",
            (digest,),
        )
        return [r[0] for r in rows]

    def mark_acknowledged(self, event_ids: list[str]) -> None:
        """Ids whose acknowledgement is sent once this transaction is committed: a message
        not marked so was surely not acknowledged (inside a transaction the caller holds)."""
        for chunk, marks in in_chunks(event_ids):
            self.store.conn.execute(
                f"UPDATE seen_events SET acked = 1 WHERE event_id IN ({marks})",  # noqa: S608
                chunk,
            )

    def remember(self, events: list[tuple[str, str | None]]) -> None:
        """(event id, content id) of events handled (inside a transaction the caller
        holds), the oldest beyond ``max_seen`` forgotten."""
        if not events:
            return
        now = log_now()
        conn, dialect = self.store.conn, self.store.dialect
        conn.executemany(
            dialect.insert_ignore("seen_events", ("event_id", "seen_at", "digest")),
            [(i, now, d) for i, d in events],
        )
        if self.untrimmed.due("seen", len(events), max(1, self.max_seen // 100)):
            self._forget_oldest()

    def trim_written(self) -> None:
        """``_forget_oldest`` if this process remembered ids since it last did: the end of
        a run (inside a transaction the caller holds)."""
        if self.untrimmed.take():
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        """Forget the seen ids beyond ``max_seen`` (inside a transaction the caller holds)."""
        conn, dialect = self.store.conn, self.store.dialect
        # in two statements: MySQL deletes from no table its subquery reads
        (newest,) = conn.execute(f"SELECT MAX({dialect.sequence}) FROM seen_events").fetchone()  # noqa: S608
        conn.execute(
            f"DELETE FROM seen_events WHERE {dialect.sequence} <= ?",  # noqa: S608 - a column name
            (int(newest or 0) - self.max_seen,),
        )

    def changed(self) -> bool:
        """True when subscriptions, endpoints' switches or mutes changed since the last
        call, by any process: one read of the counter each such change bumps in its own
        transaction (``Store.touch``). On every backend alike; SQLite's data_version would
        also change with every delivery another listener commits."""
        row = self.store.conn.execute("SELECT version FROM settings_version").fetchone()
        version = int(row[0]) if row else 0
        last, self._data_version = self._data_version, version
        return last is not None and version != last

    # -- listeners ---------------------------------------------------------------------

    def save_listener(self, run: str, source: str, doc: dict[str, Any]) -> None:
        """A listener run's statistics and heartbeat (``doc`` holds host, pid, started)."""
        with self.store.transaction():
            self.store.conn.execute(
                self.store.dialect.upsert(
                    "listeners",
                    ("id", "host", "pid", "source", "started", "updated", "doc"),
                    ("id",),
                ),
                (run, doc.get("host"), doc.get("pid"), source, doc.get("started"), log_now(),
                 json.dumps(doc)),
            )  # fmt: skip

    def listeners(self) -> list[dict[str, Any]]:
        """Every listener run the store knows of, by source, host and start."""
        rows = self.store.conn.execute(
            "SELECT id, source, updated, doc FROM listeners ORDER BY source, host, started, id"
        )
        return [
            {"id": r["id"], "source": r["source"], **json.loads(r["doc"]), "updated": r["updated"]}
            for r in rows
        ]

    def forget_listeners(self, days: int) -> None:
        """Runs not heard of for ``days`` (stopped, or killed long ago)."""
        with self.store.transaction():
            self.store.conn.execute(
                "DELETE FROM listeners WHERE updated < ?", (_minutes_ago(days * 24 * 60),)
            )
