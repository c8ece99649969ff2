"""What differs between the store's three databases, as small hooks; every other query is
written once, with ``?`` placeholders, in SQL all three read.

SQLite is the default and stays on the plain ``sqlite3`` connection (no layer between
the store and the driver: see bench/RESULTS.md, "Store: database layer"). MariaDB/MySQL
and PostgreSQL are reached through csnotify/servers.py, imported only when the store is
given as a URL.
"""

from __future__ import annotations

from collections.abc import Sequence


class Dialect:
    """A plain class, not a dataclass: every command imports this module (start-up)."""

    __slots__ = ("name", "returning_id", "sequence", "skip_locked")

    def __init__(
        self,
        name: str,  # sqlite | mysql | postgresql
        sequence: str = "seq",
        skip_locked: bool = True,
        returning_id: bool = False,
    ) -> None:
        self.name = name
        # Column that orders seen_events by insertion (SQLite's rowid; an identity elsewhere).
        self.sequence = sequence
        # Claims take rows with SELECT ... FOR UPDATE SKIP LOCKED (server databases);
        # SQLite's single writer takes them with one UPDATE ... RETURNING.
        self.skip_locked = skip_locked
        # New ids come back through RETURNING (PostgreSQL has no lastrowid).
        self.returning_id = returning_id

    def insert_ignore(self, table: str, columns: Sequence[str]) -> str:
        """An INSERT that skips rows whose key exists."""
        cols, marks = _columns(columns), ", ".join("?" * len(columns))
        if self.name == "mysql":
            return f"INSERT IGNORE INTO {table} ({cols}) VALUES ({marks})"
        return f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING"

    def upsert(
        self,
        table: str,
        columns: Sequence[str],
        keys: Sequence[str],
        add: Sequence[str] = (),
        rows: str | None = None,
    ) -> str:
        """INSERT, or on a key conflict set the other columns (``add``: add to them). The
        rows are one of ``?`` values, or those of the SELECT ``rows``."""
        cols = _columns(columns)
        values = rows or f"VALUES ({', '.join('?' * len(columns))})"
        rest = [c for c in columns if c not in keys]
        if self.name == "mysql":
            new = {c: f"VALUES({quoted(c)})" for c in rest}
            sets = ", ".join(
                f"{quoted(c)} = {quoted(c)} + {new[c]}" if c in add else f"{quoted(c)} = {new[c]}"
                for c in rest
            )
            return f"INSERT INTO {table} ({cols}) {values} ON DUPLICATE KEY UPDATE {sets}"
        sets = ", ".join(
            f"{quoted(c)} = {table}.{quoted(c)} + excluded.{quoted(c)}"
            if c in add
            else f"{quoted(c)} = excluded.{quoted(c)}"
            for c in rest
        )
        conflict = f"ON CONFLICT ({_columns(keys)}) DO UPDATE SET {sets}"
        return f"INSERT INTO {table} ({cols}) {values} {conflict}"

    def insert(self, table: str, columns: Sequence[str]) -> str:
        """An INSERT whose new id the store reads (``Store.insert_row``)."""
        sql = f"INSERT INTO {table} ({_columns(columns)}) VALUES ({', '.join('?' * len(columns))})"
        return sql + " RETURNING id" if self.returning_id else sql


SQLITE = Dialect("sqlite", sequence="rowid", skip_locked=False)
MYSQL = Dialect("mysql")
POSTGRESQL = Dialect("postgresql", returning_id=True)

# Column names that are keywords somewhere ("key" is reserved in MySQL): always quoted.
# MySQL sessions run with ANSI_QUOTES, so double quotes work on all three.
KEYWORDS = frozenset({"key"})


def quoted(column: str) -> str:
    return f'"{column}"' if column in KEYWORDS else column


def _columns(columns: Sequence[str]) -> str:
    return ", ".join(quoted(c) for c in columns)
