"""The store on a database server: MariaDB/MySQL (PyMySQL) or PostgreSQL (psycopg 3).

Imported only when ``--db`` / ``CSNOTIFY_DB`` is a URL, so the SQLite default starts as
fast as before. ``ServerConnection`` takes the store's queries as written for SQLite
(``?`` placeholders, rows read by index or by name) and runs them on the server;
``ServerSchema`` runs the named migrations (written against sqlite-utils' table API) as
the server's DDL, under a lock so that two hosts starting at once migrate once.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

from csnotify.clock import log_now
from csnotify.dialects import MYSQL, POSTGRESQL, Dialect
from csnotify.errors import BadInput, Unreachable
from csnotify.redact import MASK, mask_uri

SCHEMES = {"mysql": MYSQL, "mariadb": MYSQL, "postgresql": POSTGRESQL, "postgres": POSTGRESQL}
DEFAULT_PORTS = {"mysql": 3306, "postgresql": 5432}
URL_FORMS = (
    "mysql://USER:PASSWORD@HOST:3306/DATABASE or postgresql://USER:PASSWORD@HOST:5432/DATABASE"
)
CONNECT_TIMEOUT_S = 10
LOCK_TIMEOUT_S = 120
# Tables the store trims by insertion order; SQLite has its rowid, servers get a column.
SEQUENCED = frozenset({"seen_events"})


@dataclass(frozen=True)
class DatabaseUrl:
    dialect: Dialect
    user: str
    password: str
    host: str
    port: int
    database: str

    def __str__(self) -> str:
        """The URL as shown anywhere: the password masked."""
        secret = f":{MASK}" if self.password else ""
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6, as in a URL
        return f"{self.dialect.name}://{self.user}{secret}@{host}:{self.port}/{self.database}"


def parse_url(text: str, what: str = "--db / CSNOTIFY_DB") -> DatabaseUrl:
    """``mysql://user:pass@host:3306/db`` or ``postgresql://...``; BadInput otherwise,
    naming ``what`` (the option the URL came from)."""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise BadInput(
            f"{what}: the scheme '{scheme}://' is not a store csnotify knows;"
            f" give a file path, {URL_FORMS}"
        )
    dialect = SCHEMES[scheme]
    try:
        port = parts.port or DEFAULT_PORTS[dialect.name]
    except ValueError:  # not a number: shown as given
        raise BadInput(
            f"{what}: the port in {mask_uri(text)} is not a number; use {URL_FORMS}"
        ) from None
    database = unquote(parts.path.lstrip("/"))
    user, host = unquote(parts.username or ""), parts.hostname or ""
    if parts.query:
        raise BadInput(
            f"{what}: the database URL takes no options after '?' ({mask_uri(text)});"
            f" use {URL_FORMS}"
        )
    if not host or not database or "/" in database or port == 0:
        shown = DatabaseUrl(dialect, user, "", host, port, database)
        raise BadInput(f"{what}: cannot read the database URL {shown}; use {URL_FORMS}")
    return DatabaseUrl(dialect, user, unquote(parts.password or ""), host, port, database)


class Row(tuple[Any, ...]):
    """A result row read by position or by column name, as ``sqlite3.Row`` is."""

    index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row.index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self.index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self.index)


class ServerCursor:
    def __init__(self, raw: Any, rowcount: int | None = None) -> None:
        self.raw = raw
        self.rowcount = raw.rowcount if rowcount is None else rowcount
        self.lastrowid = getattr(raw, "lastrowid", None)
        self.description = description = raw.description
        self.index = {d[0]: i for i, d in enumerate(description)} if description else {}

    def fetchone(self) -> Row | None:
        values = self.raw.fetchone()
        return None if values is None else Row(values, self.index)

    def fetchmany(self, size: int) -> list[Row]:
        return [Row(v, self.index) for v in self.raw.fetchmany(size)] if self.index else []

    def fetchall(self) -> list[Row]:
        return [Row(v, self.index) for v in self.raw.fetchall()] if self.index else []

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


@lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    """``?`` -> ``%s`` (both drivers format with %, so a literal % is doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class ServerConnection:
    """The part of ``sqlite3.Connection`` the store uses, over PyMySQL or psycopg; in
    autocommit mode except inside ``transaction()``.

    A connection the server dropped (restart, fail-over, idle timeout) is opened again
    when next used; a read or a BEGIN that found it dropped is tried once more on the new
    one. A write outside a transaction, or anything inside one, is not repeated: the caller
    sees the error (the outbox's writer tries its transaction again)."""

    def __init__(self, url: DatabaseUrl, raw: Any) -> None:
        self.url = url
        self.dialect = url.dialect
        self.raw = raw
        self.in_transaction = False
        self._id_step: int | None = None
        self._returning: bool | None = None

    def returns_ids(self) -> bool:
        """A multi-row INSERT can return its rows' ids (RETURNING): PostgreSQL, and
        MariaDB from 10.5 whatever its innodb_autoinc_lock_mode (Galera's is 2); MySQL
        cannot."""
        if self._returning is None:
            self._returning = self.dialect.returning_id
            if self.dialect is MYSQL:
                row = self.execute("SELECT VERSION()").fetchone()
                version = str(row[0]) if row else ""
                numbers = re.match(r"(\d+)\.(\d+)", version)
                self._returning = "MariaDB" in version and bool(
                    numbers and (int(numbers[1]), int(numbers[2])) >= (10, 5)
                )
        return self._returning

    def id_step(self) -> int:
        """How a multi-row INSERT's new ids follow each other, so that they are known from
        one answer; 0: they cannot be known. PostgreSQL returns them (1). MySQL gives the
        first and numbers the rest auto_increment_increment apart (a Galera cluster sets
        it to its size), unless innodb_autoinc_lock_mode is 2 (interleaved: MySQL 8's
        default, and Galera's), when concurrent inserts may take ids between."""
        if self._id_step is None:
            self._id_step = 1
            if self.dialect is MYSQL:
                row = self.execute(
                    "SELECT @@innodb_autoinc_lock_mode, @@auto_increment_increment"
                ).fetchone()
                mode, step = row if row else (2, 1)
                self._id_step = int(step) if int(mode) < 2 else 0
        return self._id_step

    def execute(self, sql: str, params: Sequence[Any] = ()) -> ServerCursor:
        sql, params = _placeholders(sql), tuple(params)
        try:
            cursor = self._cursor()
            cursor.execute(sql, params)
        except Exception:
            if self.in_transaction or not self._dropped() or not _repeatable(sql):
                raise
            cursor = self._cursor()
            cursor.execute(sql, params)
        return ServerCursor(cursor)

    def executemany(self, sql: str, seq: Sequence[Sequence[Any]]) -> ServerCursor:
        rows = [tuple(p) for p in seq]
        cursor = self._cursor()
        if rows:
            cursor.executemany(_placeholders(sql), rows)
        return ServerCursor(cursor, rowcount=max(cursor.rowcount, 0) if rows else 0)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.execute("BEGIN")
        self.in_transaction = True
        try:
            yield
            self.raw.cursor().execute("COMMIT")
        except BaseException:
            with suppress(Exception):  # a lost connection has nothing to roll back
                self.raw.cursor().execute("ROLLBACK")
            raise
        finally:
            self.in_transaction = False

    def _cursor(self) -> Any:
        if self._dropped():
            self.close()
            self.raw = _open(self.url)
        return self.raw.cursor()

    def _dropped(self) -> bool:
        if self.dialect is MYSQL:
            return not self.raw.open  # PyMySQL closes its side on a network error
        return bool(self.raw.closed or self.raw.broken)

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """A lock on this database held by one connection at a time (waits for it)."""
        if self.dialect is MYSQL:
            key = f"csnotify:{self.url.database}:{name}"[:64]  # GET_LOCK is server-wide
            got = self.execute("SELECT GET_LOCK(?, ?)", (key, LOCK_TIMEOUT_S)).fetchone()
            if not got or got[0] != 1:
                raise Unreachable(f"store {self.url}: waited {LOCK_TIMEOUT_S} s for lock {key}")
            release = ("SELECT RELEASE_LOCK(?)", (key,))
        else:  # advisory locks belong to the current database
            key_id = zlib.crc32(f"csnotify:{name}".encode())
            self.execute("SELECT pg_advisory_lock(?)", (key_id,))
            release = ("SELECT pg_advisory_unlock(?)", (key_id,))
        try:
            yield
        finally:
            with suppress(Exception):
                self.execute(*release)

    def tables(self) -> set[str]:
        if self.dialect is MYSQL:
            sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
        else:
            sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        return {r[0] for r in self.execute(sql)}

    def close(self) -> None:
        with suppress(Exception):
            self.raw.close()


def _repeatable(sql: str) -> bool:
    """Statements that change nothing when run twice."""
    return sql.startswith(("SELECT", "BEGIN"))


def _open(url: DatabaseUrl) -> Any:
    return _connect_mysql(url) if url.dialect is MYSQL else _connect_postgresql(url)


def connect(url: DatabaseUrl) -> ServerConnection:
    """A connection in autocommit mode; Unreachable (one line, password masked) if the
    server cannot be reached, refuses the user or lacks the database."""
    try:
        raw = _open(url)
    except ImportError as exc:
        extra = "mysql" if url.dialect is MYSQL else "postgresql"
        raise BadInput(
            f"store {url}: the driver is not installed ({exc.name});"
            f" pip install 'csnotify[{extra}]'"
        ) from None
    except Exception as exc:  # noqa: BLE001 - each driver has its own error tree
        raise Unreachable(f"cannot open store {url}: {reason(exc, url)}") from None
    return ServerConnection(url, raw)


def _connect_mysql(url: DatabaseUrl) -> Any:
    import pymysql

    raw = pymysql.connect(
        host=url.host, port=url.port, user=url.user, password=url.password,
        database=url.database, charset="utf8mb4", autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_S,
    )  # fmt: skip
    with raw.cursor() as cursor:
        # double-quoted names as in standard SQL (column "key"); claims skip locked rows
        # without the gap locks of REPEATABLE READ
        cursor.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')")
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    return raw


def _connect_postgresql(url: DatabaseUrl) -> Any:
    import psycopg

    return psycopg.connect(
        host=url.host, port=url.port, user=url.user, password=url.password,
        dbname=url.database, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
    )  # fmt: skip


def reason(exc: BaseException, url: DatabaseUrl) -> str:
    """A driver's error as one line, never with the password in it."""
    args = getattr(exc, "args", ())
    text = str(args[1]) if len(args) == 2 and isinstance(args[0], int) else str(exc)  # PyMySQL
    text = " ".join(text.split())
    if url.password:
        text = text.replace(url.password, MASK)
    return text.rstrip(".") or type(exc).__name__


# -- migrations ----------------------------------------------------------------------------


Steps = Sequence[tuple[str, Callable[[Any], None]]]


def migrate(conn: ServerConnection, steps: Steps) -> list[str]:
    """Apply the named steps this database lacks, one process at a time; their names."""
    known = [name for name, _ in steps]
    with conn.lock("migrate"):
        tables = conn.tables()
        if tables and "migrations" not in tables:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise BadInput(
                f"{conn.url} is not a csnotify store (it holds tables {shown} of another"
                " application); give --db or CSNOTIFY_DB an empty database or a csnotify store"
            )
        if "migrations" not in tables:
            conn.execute(
                "CREATE TABLE migrations (name VARCHAR(255) PRIMARY KEY, applied_at VARCHAR(32))"
                + TABLE_OPTIONS[conn.dialect.name]
            )
        done = {r[0] for r in conn.execute("SELECT name FROM migrations")}
        if done - set(known):
            raise BadInput(
                f"store {conn.url} has migrations this csnotify does not know"
                f" ({', '.join(sorted(done - set(known)))}): it is newer; upgrade csnotify"
            )
        applied = []
        for name, step in steps:
            if name not in done:
                _run_step(conn, name, step, first=not done and not applied)
                applied.append(name)
    return applied


def _run_step(conn: ServerConnection, name: str, step: Callable[[Any], None], first: bool) -> None:
    """PostgreSQL runs a step and its record as one transaction. MySQL commits each DDL
    statement (the lock alone keeps a second host out), so the tables a failed step made
    are dropped; after a failed first step the database is empty again, so that a missing
    grant, once given, does not meet half a schema."""
    before = conn.tables() - ({"migrations"} if first else set())
    try:
        with conn.transaction() if conn.dialect is POSTGRESQL else nullcontext():
            step(ServerSchema(conn))
            conn.execute(
                "INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (name, log_now())
            )
    except Exception:
        made = conn.tables() - before
        with suppress(Exception):
            if made and conn.dialect is MYSQL:
                conn.execute("SET SESSION foreign_key_checks = 0")
            if made:
                conn.execute(f"DROP TABLE {', '.join(chr(34) + t + chr(34) for t in made)}")
        if made and conn.dialect is MYSQL:
            with suppress(Exception):
                conn.execute("SET SESSION foreign_key_checks = 1")
        raise


def applied_count(conn: ServerConnection) -> int:
    return int(conn.execute("SELECT count(*) FROM migrations").fetchone()[0])  # type: ignore[index]


MYSQL_KEY_BYTES = 3072  # InnoDB's longest index key: text columns in keys share it
TYPES = {
    "mysql": {int: "BIGINT", str: "LONGTEXT", float: "DOUBLE PRECISION"},
    "postgresql": {int: "BIGINT", str: "TEXT", float: "DOUBLE PRECISION"},
}
# MariaDB/MySQL: a table takes its database's character set unless told (latin1 on many
# servers): any text an event or a subscriber brings, an emoji too, needs utf8mb4
TABLE_OPTIONS = {"mysql": " DEFAULT CHARACTER SET utf8mb4", "postgresql": ""}
IDENTITY = {
    "mysql": "BIGINT NOT NULL AUTO_INCREMENT",
    "postgresql": "BIGINT GENERATED BY DEFAULT AS IDENTITY",
}


class ServerSchema:
    """The part of sqlite-utils' ``Database`` that the migrations use, as server DDL."""

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn
        self.name = conn.dialect.name

    def __getitem__(self, table: str) -> ServerTable:
        return ServerTable(self, table)

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        """Rows as dicts, as sqlite-utils' ``Database.query`` gives them."""
        for row in self.conn.execute(sql, params).fetchall():
            yield dict(zip(row.keys(), row, strict=True))

    def execute(self, sql: str) -> None:
        """DDL written for SQLite, in the server's types."""
        index = re.fullmatch(r"\s*CREATE (UNIQUE )?INDEX (\w+) ON (\w+) \(([^)]*)\)\s*", sql)
        if index:
            unique, name, table, cols = index.groups()
            self[table].create_index([c.strip() for c in cols.split(",")], name, bool(unique))
            return
        sql = sql.replace("INTEGER PRIMARY KEY AUTOINCREMENT", f"{IDENTITY[self.name]} PRIMARY KEY")
        sql = re.sub(r"\bINTEGER\b", "BIGINT", sql)
        sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)  # REAL is 4 bytes on PostgreSQL
        sql = re.sub(r"\bTEXT\b", TYPES[self.name][str], sql)
        self.conn.execute(sql)


@dataclass
class ServerTable:
    schema: ServerSchema
    name: str

    def exists(self) -> bool:
        return self.name in self.schema.conn.tables()

    def create(
        self,
        columns: dict[str, type],
        pk: str | tuple[str, ...] = "id",
        not_null: Sequence[str] = (),
        defaults: dict[str, Any] | None = None,
        foreign_keys: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        keys = (pk,) if isinstance(pk, str) else tuple(pk)
        defaults = defaults or {}
        lines = []
        for col, kind in columns.items():
            if keys == ("id",) and col == "id" and kind is int:
                lines.append(f'"id" {IDENTITY[self.schema.name]} PRIMARY KEY')
                continue
            typ = self._type(kind, keys, columns) if col in keys else TYPES[self.schema.name][kind]
            extra = " NOT NULL" if col in not_null or col in keys else ""
            if col in defaults:
                extra += f" DEFAULT {_literal(defaults[col])}"
            lines.append(f'"{col}" {typ}{extra}')
        if keys != ("id",) or columns.get("id") is not int:
            lines.append(f"PRIMARY KEY ({', '.join(f'{chr(34)}{k}{chr(34)}' for k in keys)})")
        if self.name in SEQUENCED:
            lines.append(f'"seq" {IDENTITY[self.schema.name]} UNIQUE')
        lines += [
            f'FOREIGN KEY ("{col}") REFERENCES "{other}" ("{other_col}")'
            for col, other, other_col in foreign_keys
        ]
        self.schema.conn.execute(
            f'CREATE TABLE "{self.name}" ({", ".join(lines)}){TABLE_OPTIONS[self.schema.name]}'
        )

    def insert(self, values: dict[str, Any]) -> None:
        cols = ", ".join(f'"{c}"' for c in values)
        self.schema.conn.execute(
            f'INSERT INTO "{self.name}" ({cols}) VALUES ({", ".join("?" * len(values))})',  # noqa: S608
            list(values.values()),
        )

    def add_column(self, col: str, kind: type, not_null_default: Any = None) -> None:
        typ = TYPES[self.schema.name][kind]
        if not_null_default is not None:
            typ += f" NOT NULL DEFAULT {_literal(not_null_default)}"
        self.schema.conn.execute(f'ALTER TABLE "{self.name}" ADD COLUMN "{col}" {typ}')

    def create_index(
        self, columns: Sequence[str], index_name: str | None = None, unique: bool = False
    ) -> None:
        if self.schema.name == "mysql":
            self._keyable(columns)
        name = index_name or f"idx_{self.name}_{'_'.join(columns)}"
        cols = ", ".join(f'"{c}"' for c in columns)
        kind = "UNIQUE INDEX" if unique else "INDEX"
        self.schema.conn.execute(f'CREATE {kind} "{name}" ON "{self.name}" ({cols})')

    def _type(self, kind: type, keys: Sequence[str], columns: dict[str, type]) -> str:
        if self.schema.name != "mysql" or kind is not str:
            return TYPES[self.schema.name][kind]
        return f"VARCHAR({_key_chars(sum(columns[k] is str for k in keys), len(keys))})"

    def _keyable(self, columns: Sequence[str]) -> None:
        """MySQL indexes no LONGTEXT: the text columns of a new index become VARCHARs
        (they are empty or short: the index is made by a migration)."""
        rows = self.schema.conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = DATABASE()"
            " AND table_name = ?",
            (self.name,),
        ).fetchall()
        info = {r[0]: r for r in rows}
        texts = [c for c in columns if info[c][1] in ("text", "longtext", "mediumtext")]
        for col in texts:
            _, _, nullable, default = info[col]
            extra = "" if nullable == "YES" else " NOT NULL"
            if default is not None and default != "NULL":
                extra += f" DEFAULT {default if default.startswith(chr(39)) else _literal(default)}"
            chars = _key_chars(len(texts), len(columns))
            self.schema.conn.execute(
                f'ALTER TABLE "{self.name}" MODIFY "{col}" VARCHAR({chars}){extra}'
            )


def _key_chars(texts: int, columns: int) -> int:
    """VARCHAR length for each of ``texts`` text columns in a key of ``columns``
    (utf8mb4: 4 bytes a character; other key columns are BIGINTs)."""
    return (MYSQL_KEY_BYTES - 8 * (columns - texts)) // (4 * max(texts, 1))


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)
