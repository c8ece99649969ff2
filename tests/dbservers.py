"""The database servers on this machine for the store's tests: MariaDB on 127.0.0.1:3306
(user root, no password) and PostgreSQL on 127.0.0.1:5432 (user postgres, trust). Each test
gets a database of its own, dropped afterwards. A server that is down fails the test with
its name (`.ci/run` starts both)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from csnotify.servers import ServerConnection

SERVERS = {
    "mysql": os.environ.get("CSNOTIFY_TEST_MYSQL", "mysql://root@127.0.0.1:3306"),
    "postgresql": os.environ.get(
        "CSNOTIFY_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432"
    ),
}
NAMES = {"mysql": "MariaDB", "postgresql": "PostgreSQL"}
BACKENDS = ["sqlite", "mysql", "postgresql"]


def require(kind: str) -> None:
    from csnotify.servers import parse_url

    url = parse_url(SERVERS[kind] + "/x")
    try:
        with socket.create_connection((url.host, url.port), timeout=2):
            return
    except OSError:
        pytest.fail(
            f"{NAMES[kind]} is not running on {url.host}:{url.port}; the store's tests need it"
            " (start it as .ci/run does)",
            pytrace=False,
        )


def admin_connection(kind: str) -> ServerConnection:
    """The server's administrator, in its own database (not a test's)."""
    from csnotify.servers import connect, parse_url

    return connect(parse_url(f"{SERVERS[kind]}/{'mysql' if kind == 'mysql' else 'postgres'}"))


def admin_sql(kind: str, sql: str) -> None:
    conn = admin_connection(kind)
    try:
        conn.execute(sql)
    finally:
        conn.close()


@contextmanager
def fresh_database(kind: str, options: str = "") -> Iterator[str]:
    """The URL of a new, empty database (``options``: of CREATE DATABASE), dropped on the
    way out."""
    require(kind)
    name = f"csnotify_test_{uuid.uuid4().hex[:12]}"
    admin_sql(kind, f"CREATE DATABASE {name}{options}")
    try:
        yield f"{SERVERS[kind]}/{name}"
    finally:
        admin_sql(kind, f"DROP DATABASE {name}" + (" WITH (FORCE)" if kind == "postgresql" else ""))


def database_exists(kind: str, name: str) -> bool:
    conn = admin_connection(kind)
    try:
        sql = (
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?"
            if kind == "mysql"
            else "SELECT count(*) FROM pg_database WHERE datname = ?"
        )
        return bool(conn.execute(sql, (name,)).fetchone()[0])  # type: ignore[index]
    finally:
        conn.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The store on each backend in turn: CSNOTIFY_DB (for the CLI, in-process or not) is
    the test's SQLite file or a fresh server database; yields what CSNOTIFY_DB holds."""
    if request.param == "sqlite":
        yield os.environ["CSNOTIFY_DB"]
        return
    with fresh_database(request.param) as url:
        monkeypatch.setenv("CSNOTIFY_DB", url)
        yield url


@pytest.fixture(params=["mysql", "postgresql"])
def server_db(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on each server in turn."""
    with fresh_database(request.param) as url:
        yield url
