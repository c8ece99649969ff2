"""The store: schema, migrations, WAL, file modes, default path, concurrent writers (SQLite);
the same store on MariaDB and PostgreSQL (issue 15)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from dbservers import (  # noqa: F401 - fixtures
    SERVERS,
    admin_sql,
    backend,
    database_exists,
    fresh_database,
    require,
    server_db,
)
from helpers import REPO, run_process
from receivers import Answer, Receiver

from csnotify.delivery.intake import resource_key
from csnotify.delivery.outbox import Changes, Outbox, PendingRow
from csnotify.events import Event, from_normalised
from csnotify.migrations import MIGRATIONS
from csnotify.models import Mute
from csnotify.store import PendingBatches, SourceState, Store, open_store

# Every table of the store and its columns, in order, as the migrations leave it.
SCHEMA = {
    "migrations": ["name", "applied_at"],
    "subscriptions": [
        "id", "name", "patterns", "level", "filters", "format", "key", "title", "body",
        "enabled", "created", "updated", "group_wait", "categories", "states",
        "owner_scope", "owner_account", "owner_domain",
    ],
    "endpoints": [
        "id", "subscription_id", "position", "uri", "enabled", "consecutive_failures",
        "total_failures", "total_successes", "last_error", "last_error_at", "last_success_at",
        "disabled_reason", "max_per_minute", "total_muted", "total_folded", "strict_order",
        "total_dropped",
    ],
    "deliveries": [
        "id", "endpoint_id", "subscription", "endpoint", "event_id", "event_type", "at",
        "attempts", "status", "http_status", "latency_ms", "error", "webhook_id", "payload",
        "listener",
    ],
    "cursors": ["source", "position", "updated"],
    "seen_events": ["event_id", "seen_at", "digest", "acked"],
    "mutes": ["id", "subscription", "endpoint", "pattern", "reason", "created", "until"],
    "batches": ["endpoint_id", "kind", "due", "doc", "owner"],
    "trimmed": ["endpoint_id", "minute", "status", "count"],
    "pending": [
        "id", "endpoint_id", "event_id", "event_type", "resource", "payload", "raw_text",
        "webhook_id", "accepted", "attempts", "next_at", "last_error", "owner", "lease",
    ],
    "names": ["kind", "uuid", "doc", "fetched"],
    "api_tokens": ["id", "digest", "account", "domain", "scope", "created", "expires", "revoked"],
    "listeners": ["id", "host", "pid", "source", "started", "updated", "doc"],
    "settings_version": ["id", "version"],
    "pacing": ["endpoint_id", "sent"],
}  # fmt: skip


def schema_of(store: Store) -> dict[str, list[str]]:
    """Each table's columns in order, as the database itself describes them."""
    conn = store.conn
    if store.dialect.name == "sqlite":
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]  # fmt: skip
        return {t: [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')] for t in tables}
    where = "DATABASE()" if store.dialect.name == "mysql" else "current_schema()"
    sql = "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
    rows = conn.execute(sql + where + " ORDER BY table_name, ordinal_position").fetchall()
    found: dict[str, list[str]] = {}
    for table, column in rows:
        found.setdefault(table, []).append(column)
    return found


def test_new_store_has_schema_wal_and_version(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "s.db"
    store = Store.open(path)
    conn = store.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 10000
    assert store.schema_version == len(MIGRATIONS)
    applied = [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY name")]
    assert applied == [name for name, _ in MIGRATIONS]
    store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for d in (path.parent, path.parent.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_every_table_has_exactly_its_columns(backend: str) -> None:  # noqa: F811
    store = open_store(backend, {})
    expected = dict(SCHEMA)
    if store.dialect.name != "sqlite":  # the order SQLite reads from seen_events' rowid
        expected["seen_events"] = ["event_id", "seen_at", "seq", "digest", "acked"]
    try:
        assert schema_of(store) == expected
        applied = [r[0] for r in store.conn.execute("SELECT name FROM migrations ORDER BY name")]
        assert applied == [name for name, _ in MIGRATIONS]
    finally:
        store.close()


def test_reopening_migrates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store.open(path).close()
    before = path.read_bytes()
    with sqlite3.connect(path) as conn:
        applied = conn.execute("SELECT name, applied_at FROM migrations ORDER BY name").fetchall()
    store = Store.open(path)
    assert store.migrate() == []
    store.close()
    assert path.read_bytes() == before  # not a byte written, not even the user_version
    with sqlite3.connect(path) as conn:
        again = conn.execute("SELECT name, applied_at FROM migrations ORDER BY name").fetchall()
    assert again == applied and len(applied) == len(MIGRATIONS)


def test_migration_path_from_an_older_store(tmp_path: Path) -> None:
    """A store left at version 0 (as an interrupted first run leaves it: WAL mode set, its
    migration rolled back) is brought up to date by the next command."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    store = Store.open(path)
    assert store.schema_version == len(MIGRATIONS)
    assert store.subscriptions() == []
    store.close()


def test_a_version_1_store_keeps_its_data_through_m002(cli, tmp_path: Path) -> None:
    """A store written by the release before mutes and rate limits (schema version 1)."""
    from sqlite_utils import Database

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    name, step = MIGRATIONS[0]
    step(Database(conn))
    Database(conn)["migrations"].insert({"name": name, "applied_at": "2026-11-01T00:00:00Z"})
    conn.execute(
        "INSERT INTO subscriptions (id, name, patterns, level, filters, format, enabled)"
        " VALUES (1, 'old', '[\"VM.*\"]', 'INFO', '[]', 'json', 1)"
    )
    conn.execute(
        "INSERT INTO endpoints (subscription_id, position, uri, enabled, total_successes)"
        " VALUES (1, 0, 'https://hooks.example/cs', 1, 41)"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    r = cli("--db", str(path), "show", "old", "--json")
    assert r.exit_code == 0, r.stderr
    sub = r.json()
    assert sub["group_wait"] == 0 and sub["patterns"] == ["VM.*"]
    (ep,) = sub["endpoints"]
    assert (ep["total_successes"], ep["max_per_minute"], ep["total_muted"]) == (41, None, 0)
    assert Store.open(path).schema_version == len(MIGRATIONS) == 7
    assert cli("--db", str(path), "mute", "old", "--for", "1h", "--reason", "x").exit_code == 0


def older_store(path: Path, version: int, group_wait: float = 0) -> sqlite3.Connection:
    """A store as the release with ``version`` migrations left it, holding subscription
    'old' ('VM.*'); the caller adds what else it needs, sets user_version and commits."""
    from sqlite_utils import Database

    conn = sqlite3.connect(path)
    for name, step in MIGRATIONS[:version]:
        step(Database(conn))
        Database(conn)["migrations"].insert({"name": name, "applied_at": "2026-11-20T00:00:00Z"})
    conn.execute(
        "INSERT INTO subscriptions (id, name, patterns, level, filters, format, enabled,"
        " group_wait) VALUES (1, 'old', '[\"VM.*\"]', 'INFO', '[]', 'json', 1, ?)",
        (group_wait,),
    )
    return conn


def test_a_version_2_store_keeps_its_data_through_m003(cli, tmp_path: Path) -> None:
    """A store written by the release before the outbox (schema version 2), with a pending
    digest, a mute and counters: all kept; the endpoint gets a backlog of 0."""
    path = tmp_path / "v2.db"
    conn = older_store(path, 2, group_wait=30)
    conn.execute(
        "INSERT INTO endpoints (id, subscription_id, position, uri, enabled, total_successes,"
        " max_per_minute, total_folded) VALUES (7, 1, 0, 'https://hooks.example/cs', 1, 41, 5, 3)"
    )
    conn.execute(
        "INSERT INTO mutes (subscription, reason, created, until)"
        " VALUES ('old', 'deploy', '2026-11-20T00:00:00Z', '2099-01-01T00:00:00Z')"
    )
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    r = cli("--db", str(path), "show", "old", "--json")
    assert r.exit_code == 0, r.stderr
    sub = r.json()
    assert sub["group_wait"] == 30
    (ep,) = sub["endpoints"]
    assert (ep["total_successes"], ep["max_per_minute"], ep["total_folded"]) == (41, 5, 3)
    assert (ep["backlog"], ep["strict_order"], ep["total_dropped"]) == (0, False, 0)
    mutes = cli("--db", str(path), "mutes", "--json").json()
    assert [m["reason"] for m in mutes] == ["deploy"]
    store = Store.open(path)
    assert store.schema_version == len(MIGRATIONS) == 7
    assert [r[0] for r in store.conn.execute("SELECT name FROM migrations ORDER BY name")] == [
        "m001_initial", "m002_operator_control", "m003_outbox", "m004_outcomes_and_names",
        "m005_api_tokens_and_owners", "m006_shared_state", "m007_listeners_share_work",
    ]  # fmt: skip
    assert store.conn.execute("SELECT count(*) FROM pending").fetchone()[0] == 0


def test_a_version_3_store_moves_its_subscriptions_to_one_notification_per_operation(
    cli, tmp_path: Path
) -> None:
    """Issue 13: a subscription made before categories and states existed gets the new
    default (each operation's outcome, and alerts), as the README's release notes say."""
    path = tmp_path / "v3.db"
    conn = older_store(path, 3)
    conn.execute("INSERT INTO seen_events (event_id, seen_at) VALUES ('e1', '2026-11-20')")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    sub = cli("--db", str(path), "show", "old", "--json").json()
    assert (sub["categories"], sub["states"]) == ([], [])
    scheduled = tmp_path / "scheduled.json"
    scheduled.write_text(
        '{"routing_key": "management-server.ActionEvent.VM-START.VirtualMachine.v1",'
        ' "body": {"event": "VM.START", "status": "Scheduled", "entityuuid": "v1"}}'
    )
    r = cli("--db", str(path), "match", "--event", str(scheduled))
    assert "skips   old: not the outcome phase (ActionEvent Scheduled)" in r.stdout
    completed = scheduled.read_text().replace("Scheduled", "Completed")
    scheduled.write_text(completed)
    assert "reaches old" in cli("--db", str(path), "match", "--event", str(scheduled)).stdout
    store = Store.open(path)
    assert [tuple(r) for r in store.conn.execute("SELECT digest FROM seen_events")] == [(None,)]


def test_newer_store_is_refused(cli, tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    conn.commit()
    conn.close()
    r = cli("--db", str(path), "list", expect=2)
    assert r.exit_code == 2
    assert "newer than this csnotify knows" in r.stderr


def test_not_a_database_is_one_line_error(cli, tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    r = cli("--db", str(path), "list", expect=2)
    assert r.exit_code == 2
    assert r.stderr.startswith("csnotify: error: cannot use store")
    assert len(r.stderr.strip().splitlines()) == 1


def test_another_applications_database_is_refused(cli, tmp_path: Path) -> None:
    path = tmp_path / "places.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
    before = path.read_bytes()
    r = cli("--db", str(path), "subscribe", "VM.*", "--to", "https://h.example/", expect=2)
    assert r.exit_code == 2
    assert "is not a csnotify store (it holds tables moz_places" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert tables == ["moz_places"]
    assert before[:100] == path.read_bytes()[:100]


def test_a_read_only_store_is_a_one_line_error(cli, db_file: Path) -> None:
    # chmod does not stop root (the tests may run as root); the immutable flag does.
    assert cli("subscribe", "VM.*", "--to", "https://h.example/", "--name", "a").exit_code == 0
    if shutil.which("chattr") is None:
        pytest.skip("chattr is needed to make a file read-only for root too")
    made = subprocess.run(["chattr", "+i", str(db_file)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"this file system takes no immutable flag: {made.stderr!r}")
    try:
        r = cli("subscribe", "VM.*", "--to", "https://h.example/", "--name", "b", expect=2)
        assert r.exit_code == 2
        assert r.stderr.startswith(f"csnotify: error: store {db_file} is read-only for this user")
        assert len(r.stderr.strip().splitlines()) == 1
        assert [s["name"] for s in cli("list", "--json").json()] == ["a"]  # reading works
    finally:
        subprocess.run(["chattr", "-i", str(db_file)], check=False)


def test_default_path_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CSNOTIFY_DB")
    data_home = tmp_path / "xdg-data"
    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    r = run_process("subscribe", "VM.*", "--to", "https://h.example/x")
    assert r.exit_code == 0, r.stderr
    path = data_home / "csnotify" / "csnotify.db"
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


HOLD_LOCK = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE subscriptions SET updated = updated")
    print("locked", flush=True)
    time.sleep(2)
    conn.execute("COMMIT")
    """
)


def test_concurrent_subscribes_wait_for_a_held_write_lock(db_file: Path) -> None:
    assert (
        run_process("subscribe", "X.*", "--to", "https://h.example/x", "--name", "first").exit_code
        == 0
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(db_file)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "csnotify",
                "subscribe",
                "VM.*",
                "--to",
                f"https://h{i}.example/",
                "--name",
                f"sub{i}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 2)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    holder.wait(timeout=10)
    waited = time.monotonic() - started
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err.lower()
    assert waited >= 1.0  # they really had to wait for the holder
    names = [s["name"] for s in run_process("list", "--json").json()]
    assert names == ["first", "sub1", "sub2"]


@pytest.mark.parametrize(
    "args",
    [["list"], ["status"], ["deliveries"], ["export"], ["dispatch", "-"], ["listen", "--source", "stdin"],
     ["subscribe", "VM.*", "--to", "https://h.example/x"], ["import", "-"]],
    ids=lambda a: " ".join(a[:2]),
)  # fmt: skip
def test_every_command_that_creates_the_store_makes_it_private(
    tmp_path: Path, args: list[str]
) -> None:
    import os

    store = tmp_path / "new" / "dir" / "csnotify.db"
    stdin = '{"subscriptions": []}' if args[0] == "import" else ""
    r = run_process(*args, input=stdin, env={**os.environ, "CSNOTIFY_DB": str(store)})
    assert r.exit_code in (0, 1), r.stderr
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.parent.parent.stat().st_mode) == 0o700
    for extra in ("-wal", "-shm"):
        side = store.with_name(store.name + extra)
        if side.exists():
            assert stat.S_IMODE(side.stat().st_mode) == 0o600


# -- every backend: SQLite, MariaDB, PostgreSQL (issue 15) -------------------------------


def test_a_new_store_records_its_migrations_once(backend: str) -> None:  # noqa: F811
    store = open_store(backend, {})
    try:
        assert store.schema_version == len(MIGRATIONS)
        names = [r[0] for r in store.conn.execute("SELECT name FROM migrations ORDER BY name")]
        assert names == [name for name, _ in MIGRATIONS]
        assert store.migrate() == []
    finally:
        store.close()
    again = open_store(backend, {})
    assert again.schema_version == len(MIGRATIONS)
    again.close()


def test_the_cli_round_trip_on_every_backend(cli, backend: str, fast_retries) -> None:  # noqa: F811
    """subscribe, list, dispatch to a real receiver (one endpoint failing), deliveries, the
    counters, a mute, a renamed subscription and the trimmed log, with --db given."""
    events = "".join(
        json.dumps({"id": f"ev-{i}", "type": "VM.START", "created": "2026-11-26T10:00:00Z"}) + "\n"
        for i in range(3)
    )
    with Receiver() as ok, Receiver(lambda _r: Answer(500, b"down")) as bad:
        r = cli("--db", backend, "subscribe", "VM.*", "--to", ok.url, "--to", bad.url,
                "--name", "vms", "--key", "generate")  # fmt: skip
        assert r.exit_code == 0, r.stderr
        assert [s["name"] for s in cli("--db", backend, "list", "--json").json()] == ["vms"]
        r = cli(
            "--db", backend, "-c", "log.max_per_endpoint=2", "dispatch", "-", input=events, expect=1
        )
        assert r.exit_code == 1, r.stderr  # the failing endpoint's deliveries failed
        assert [b["event"]["id"] for b in ok.bodies()] == ["ev-0", "ev-1", "ev-2"]
        assert ok.requests[0].headers["webhook-signature"].startswith("v1,")
    log = cli("--db", backend, "deliveries", "vms", "--json").json()
    assert sorted((d["endpoint"], d["status"]) for d in log) == sorted(
        [(ok.url, "delivered")] * 2 + [(bad.url, "failed")] * 2
    )  # two kept per endpoint: the oldest trimmed
    eps = {e["uri"]: e for e in cli("--db", backend, "show", "vms", "--json").json()["endpoints"]}
    assert (eps[ok.url]["total_successes"], eps[ok.url]["total_failures"]) == (3, 0)
    assert (eps[bad.url]["total_failures"], eps[bad.url]["consecutive_failures"]) == (3, 3)
    assert cli("--db", backend, "mute", "vms", "--for", "1h", "--reason", "deploy").exit_code == 0
    assert cli("--db", backend, "update", "vms", "--rename", "vm-events").exit_code == 0
    assert [m["subscription"] for m in cli("--db", backend, "mutes", "--json").json()] == [
        "vm-events"
    ]
    assert cli("--db", backend, "unsubscribe", "vm-events", "--yes").exit_code == 0
    assert cli("--db", backend, "list", "--json").json() == []


def test_seen_ids_are_trimmed_once_a_hundredth_of_the_bound_is_written(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "seen.db")
    count = lambda: store.conn.execute("SELECT count(*) FROM seen_events").fetchone()[0]  # noqa: E731
    state = SourceState(store, max_seen=200)  # a trim every 2 ids written
    with store.transaction():
        state.remember([(f"e{i}", None) for i in range(201)])  # 201 written: trimmed
    assert count() == 200
    with store.transaction():
        state.remember([("e201", None)])  # 1 since the trim: kept for now
    assert count() == 201
    with store.transaction():
        state.trim_written()  # the run ends
    assert count() == 200
    ids = {r[0] for r in store.conn.execute("SELECT event_id FROM seen_events")}
    assert "e0" not in ids and "e1" not in ids and "e201" in ids  # the oldest forgotten


def test_source_state_and_batches_on_every_backend(backend: str) -> None:  # noqa: F811
    store = open_store(backend, {})
    other = open_store(backend, {})
    try:
        state = SourceState(store, max_seen=3)
        with store.transaction():
            state.remember([("a", "x"), ("b", "x")])
        with store.transaction():
            state.remember([("b", "x"), ("c", "x"), ("d", "y"), ("e", "x")])  # b again: once
        assert state.accepted("x") == ["c", "e"]  # a and b forgotten (max_seen 3), in order
        with store.transaction():
            state.mark_acknowledged(["c"])
        assert state.accepted("x") == ["e"] and state.accepted("y") == ["d"]
        state.save_cursor("api", {"created": "1"})
        state.save_cursor("api", {"created": "2"})
        assert state.cursor("api") == {"created": "2"}
        batches = PendingBatches(store)
        with store.transaction():
            batches.write([(5, ("digest", 1.5, "{}"))], "")
        with store.transaction():
            batches.write([(5, ("group", 2.5, '{"n": 1}'))], "")
        assert batches.all() == [(5, "", "group", 2.5, '{"n": 1}')]
        with store.transaction():  # another listener's, for the same endpoint: both kept
            batches.write([(5, ("digest", 3.5, "{}"))], "run-b")
        assert batches.all() == [
            (5, "", "group", 2.5, '{"n": 1}'),
            (5, "run-b", "digest", 3.5, "{}"),
        ]
        with store.transaction():
            assert batches.take(5, "", "run-b/") and not batches.take(5, "", "run-c/")
        with store.transaction():  # run-b sent its batch, with the one it took over
            batches.write([(5, None)], "run-b", merged=[(5, "run-b/")])
        assert batches.all() == []
        assert state.changed() is False  # the first call only takes note
        with other.transaction():
            other.insert_mute(Mute("x", None, None, "r", "2026-11-26T00:00:00Z", "2099-01-01"))
        assert state.changed() is True
        assert state.changed() is False
    finally:
        store.close()
        other.close()


LONG_RESOURCE = "vm-" + "x" * 300  # a hand-made event's resource_id


def test_a_store_of_the_previous_version_migrates_in_place(cli, backend: str) -> None:  # noqa: F811
    """A store as the release before issue 15's phase 2 left it (4 migrations), with a
    listener's statistics as a ``listen:`` row among the cursors, an api cursor, a mute and
    a delivery: opened by this version, the listener shows in status from its own table,
    the rest is kept, and a change is seen by listeners through the new counter."""
    doc = {"events": 7, "delivered": 6, "failed": 1, "running": False, "pid": 4242,
           "host": "old.example", "heartbeat_s": 5.0, "started": "2026-11-25T10:00:00Z"}  # fmt: skip
    rows = [
        ("INSERT INTO cursors (source, position, updated) VALUES (?, ?, ?)",
         ("listen:amqp", json.dumps(doc), "2026-11-25T11:00:00.000000Z")),
        ("INSERT INTO cursors (source, position, updated) VALUES (?, ?, ?)",
         ("api", json.dumps({"created": "2026-11-25T10:59:00Z"}), "2026-11-25T11:00:00.000000Z")),
        ("INSERT INTO mutes (subscription, endpoint, pattern, reason, created, until)"
         " VALUES (?, ?, ?, ?, ?, ?)", ("old", None, None, "deploy", "2026-11-25", "2099-01-01")),
        ("INSERT INTO deliveries (endpoint_id, subscription, endpoint, event_id, event_type, at,"
         " attempts, status) VALUES (1, 'old', 'https://h.example/', 'ev-1', 'VM.START',"
         " '2026-11-25T10:00:00Z', 1, 'delivered')", ()),
        ("INSERT INTO pending (endpoint_id, event_id, event_type, resource, payload, accepted,"
         " next_at) VALUES (1, 'ev-2', 'VM.START', ?, '{}', 0, 0)", (LONG_RESOURCE,)),
    ]  # fmt: skip
    if backend.startswith(("mysql", "postgresql")):
        from csnotify.servers import connect, migrate, parse_url

        conn = connect(parse_url(backend))
        migrate(conn, MIGRATIONS[:4])
        conn.execute(
            "INSERT INTO subscriptions (id, name, patterns, level, filters, format, enabled,"
            " group_wait) VALUES (1, 'old', '[\"VM.*\"]', 'INFO', '[]', 'json', 1, 0)"
        )
        for sql, params in rows:
            conn.execute(sql, params)
        conn.close()
    else:
        path = Path(backend)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = older_store(path, 4)
        for sql, params in rows:
            conn.execute(sql, params)
        conn.execute("PRAGMA user_version = 4")
        conn.commit()
        conn.close()
    report = cli("--db", backend, "status", "--json").json()
    (listener,) = report["listeners"]
    assert (listener["source"], listener["host"], listener["pid"]) == ("amqp", "old.example", 4242)
    assert (listener["events"], listener["state"]) == (7, "stopped")
    assert [c["source"] for c in report["cursors"]] == ["api"]  # no listen: row left there
    assert [m["reason"] for m in cli("--db", backend, "mutes", "--json").json()] == ["deploy"]
    (delivery,) = cli("--db", backend, "deliveries", "--json").json()
    assert (delivery["event_id"], delivery["listener"]) == ("ev-1", None)
    store = open_store(backend, {})
    try:
        assert store.schema_version == len(MIGRATIONS)
        # m007: an ordering key too long for the index is kept as the hash new rows get
        (kept,) = store.conn.execute("SELECT resource FROM pending").fetchone()
        assert kept == resource_key(Event(id="e", type="VM.START", resource_id=LONG_RESOURCE))
        assert kept.startswith("sha256:")
        state = SourceState(store)
        assert state.changed() is False
        assert cli("--db", backend, "disable", "old").exit_code == 0
        assert state.changed() is True
    finally:
        store.close()


CLAIMER = textwrap.dedent(
    """
    import json, sys, time
    from csnotify.delivery.outbox import Outbox
    from csnotify.store import open_store
    outbox = Outbox(open_store(sys.argv[1], {}), 100)
    print("ready", flush=True)
    sys.stdin.readline()
    got = []
    while rows := outbox.claim(1, 2)[0]:
        got += [r.id for r in rows]
        time.sleep(0.005)  # as if delivering: without it one process could take every row
    print(json.dumps(got), flush=True)
    """
)


def started_together(script: str, *args: str, count: int = 2) -> list[str]:
    """``count`` Python processes running ``script``, let go at once once all are ready;
    the last line each printed."""
    procs = [
        subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]  # fmt: skip
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
    for p in procs:  # all at once: communicate() would wait for each to end
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.close()
    results = [(p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    for p, (_out, err) in zip(procs, results, strict=True):
        assert p.wait(timeout=60) == 0, err
    return [out.strip().splitlines()[-1] for out, _err in results]


def test_two_processes_never_claim_the_same_pending_row(backend: str) -> None:  # noqa: F811
    store = open_store(backend, {})
    rows = [
        PendingRow(1, from_normalised({"id": f"ev-{i}", "type": "VM.START"}), f"vm-{i}", 0.0,
                   claimed=False)
        for i in range(600)
    ]  # fmt: skip
    Outbox(store, 100).commit(Changes(new=rows))
    store.close()
    first, second = (set(json.loads(line)) for line in started_together(CLAIMER, backend))
    assert first and second  # both claimed, at the same time
    assert not first & second
    assert first | second == {r.id for r in rows}


def test_a_listener_whose_claim_was_taken_over_leaves_the_row_to_its_new_holder(
    backend: str,  # noqa: F811
) -> None:
    """A stalled listener's lease ran out and another listener claimed its row: the first
    one's late outcome (a retry, or the end) no longer writes over the row."""
    store = open_store(backend, {})
    try:
        outbox = Outbox(store, 100)
        rows = [PendingRow(1, from_normalised({"id": f"ev-{i}", "type": "VM.START"}), f"vm-{i}",
                           0.0) for i in range(3)]  # fmt: skip
        outbox.commit(Changes(new=rows))
        with store.transaction():  # another listener took the first two
            store.conn.execute(
                "UPDATE pending SET owner = ?, attempts = 7 WHERE id IN (?, ?)",
                ("db2:4242:4026531836.0a0b0c0d", rows[0].id, rows[1].id),
            )
        rows[0].attempts, rows[0].next_at, rows[0].last_error = 1, 99.0, "HTTP 500"
        outbox.commit(Changes(retries=[rows[0]], ended=[r.id for r in rows[1:]]))
        left = store.conn.execute("SELECT id, attempts, owner FROM pending ORDER BY id").fetchall()
        assert [tuple(r) for r in left] == [
            (rows[0].id, 7, "db2:4242:4026531836.0a0b0c0d"),
            (rows[1].id, 7, "db2:4242:4026531836.0a0b0c0d"),
        ]  # the third, still ours, ended
    finally:
        store.close()


MIGRATOR = textwrap.dedent(
    """
    import json, sys
    from csnotify import servers
    from csnotify.migrations import MIGRATIONS
    conn = servers.connect(servers.parse_url(sys.argv[1]))
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(servers.migrate(conn, MIGRATIONS)), flush=True)
    """
)


def test_two_processes_opening_a_fresh_database_migrate_it_once(server_db: str) -> None:  # noqa: F811
    done = sorted(json.loads(line) for line in started_together(MIGRATOR, server_db))
    assert done == [[], [name for name, _ in MIGRATIONS]]
    store = open_store(server_db, {})
    counts = store.conn.execute("SELECT name, count(*) FROM migrations GROUP BY name").fetchall()
    store.close()
    assert sorted(tuple(r) for r in counts) == [(name, 1) for name, _ in MIGRATIONS]


def test_store_urls_that_cannot_work_are_one_line_and_write_nothing(cli, db_file: Path) -> None:
    r = cli(
        "--db",
        "redis://127.0.0.1:6379/0",
        "subscribe",
        "VM.*",
        "--to",
        "https://h.example/",
        expect=2,
    )
    assert r.exit_code == 2
    assert "the scheme 'redis://' is not a store csnotify knows" in r.stderr
    r = cli("--db", "mysql://root:hunter2@127.0.0.1:1/events", "list", expect=3)
    assert r.exit_code == 3
    assert "mysql://root:********@127.0.0.1:1/events" in r.stderr and "hunter2" not in r.stderr
    for r in (
        cli("--db", "mysql://root@127.0.0.1:3306/", "list", expect=2),
        cli("--db", "postgresql://u:hunter2@127.0.0.1:5432/a/b", "list", expect=2),
    ):
        assert r.exit_code == 2 and "cannot read the database URL" in r.stderr
        assert "hunter2" not in r.stderr
    r = cli("--db", "mysql://root@127.0.0.1:3306/x?password=hunter2", "list", expect=2)
    assert "takes no options after '?'" in r.stderr and "hunter2" not in r.stderr
    r = cli("--db", "mysql://root:hunter2@[::1]:1/events", "list", expect=3)
    assert "mysql://root:********@[::1]:1/events" in r.stderr and "hunter2" not in r.stderr
    for r in (
        cli("--db", "redis://127.0.0.1:6379/0", "list", expect=2),
        cli("--db", "mysql://root:hunter2@127.0.0.1:1/events", "list", expect=3),
    ):
        assert len(r.stderr.strip().splitlines()) == 1
    assert not db_file.exists()


@pytest.mark.parametrize("kind", ["mysql", "postgresql"])
def test_a_missing_database_is_named_and_not_created(cli, kind: str) -> None:
    require(kind)
    name = f"csnotify_missing_{uuid.uuid4().hex[:8]}"
    url = SERVERS[kind].replace("@", ":hunter2@", 1)  # trust / no password: any is taken
    r = cli("--db", f"{url}/{name}", "subscribe", "VM.*", "--to", "https://h.example/", expect=3)
    assert r.exit_code == 3, r.stderr
    assert name in r.stderr and "127.0.0.1" in r.stderr and "hunter2" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not database_exists(kind, name)


def test_another_applications_database_on_a_server_is_refused(cli, server_db: str) -> None:  # noqa: F811
    from csnotify.servers import connect, parse_url

    conn = connect(parse_url(server_db))
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    r = cli("--db", server_db, "subscribe", "VM.*", "--to", "https://h.example/", expect=2)
    assert r.exit_code == 2
    assert "is not a csnotify store (it holds tables orders" in r.stderr
    assert conn.tables() == {"orders"}
    conn.close()


@pytest.mark.parametrize("kind", ["mysql", "postgresql"])
def test_a_user_with_the_readmes_grants_runs_the_store(cli, kind: str) -> None:
    """The README's CREATE/GRANT statements, as written there, are all the user needs; a
    password with characters to percent-encode works and is never shown."""
    require(kind)
    readme = (REPO / "README.md").read_text()
    block = readme.split("What the database user needs:", 1)[1].split("```sql", 1)[1]
    mysql_sql, pg_sql = block.split("```", 1)[0].split("-- PostgreSQL")
    tag = uuid.uuid4().hex[:8]
    user, database, password = f"csn_{tag}", f"csnotify_test_{tag}", "p@ss:w/rd%1"
    statements = [
        line.strip().rstrip(";")
        .replace("csnotify", database, 1 if "DATABASE" in line else 0)
        .replace("'csnotify'", f"'{user}'").replace("csnotify.*", f"{database}.*")
        .replace("USER csnotify", f"USER {user}").replace("OWNER csnotify", f"OWNER {user}")
        .replace("'...'", f"'{password}'")
        for line in (mysql_sql if kind == "mysql" else pg_sql).splitlines()
        if line.strip() and not line.startswith("--")
    ]  # fmt: skip
    try:
        for sql in statements:
            admin_sql(kind, sql)
        host = SERVERS[kind].split("@", 1)[1]
        url = f"{kind}://{user}:{quote(password, safe='')}@{host}/{database}"
        r = cli("--db", url, "subscribe", "VM.*", "--to", "https://h.example/x", "--name", "g")
        assert r.exit_code == 0, r.stderr
        r = cli("--db", url, "status", "--json")
        assert r.exit_code == 0, r.stderr
        assert r.json()["store"] == f"{kind}://{user}:********@{host}/{database}"
        assert password not in r.stdout + r.stderr
        assert [s["name"] for s in cli("--db", url, "list", "--json").json()] == ["g"]
    finally:
        if kind == "mysql":
            admin_sql(kind, f"DROP USER IF EXISTS '{user}'@'%'")
            admin_sql(kind, f"DROP DATABASE IF EXISTS {database}")
        else:
            admin_sql(kind, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            admin_sql(kind, f"DROP USER IF EXISTS {user}")


def test_a_missing_grant_leaves_the_database_as_it_was(cli, server_db: str) -> None:  # noqa: F811
    """A user who may not make the whole schema (MariaDB: no INDEX grant, and each DDL
    statement commits; PostgreSQL: no CREATE in the schema) fails at the first migration,
    exit 3, and the database is left empty; once the grant is given, the store is made."""
    from csnotify.servers import connect, parse_url

    url = parse_url(server_db)
    kind, user = url.dialect.name, f"csn_{uuid.uuid4().hex[:8]}"
    as_user = f"{kind}://{user}:pw@{SERVERS[kind].split('@', 1)[1]}/{url.database}"
    if kind == "mysql":
        admin_sql(kind, f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")
        admin_sql(kind, f"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, REFERENCES"
                        f" ON {url.database}.* TO '{user}'@'%'")  # fmt: skip
        give = f"GRANT INDEX ON {url.database}.* TO '{user}'@'%'"
    else:  # PostgreSQL 15: only the database's owner creates in schema public
        admin_sql(kind, f"CREATE USER {user} PASSWORD 'pw'")
        give = f"ALTER DATABASE {url.database} OWNER TO {user}"
    try:
        r = cli("--db", as_user, "subscribe", "VM.*", "--to", "https://h.example/x", expect=3)
        assert r.exit_code == 3, r.stderr
        assert "denied" in r.stderr and ":pw@" not in r.stderr
        conn = connect(url)
        assert conn.tables() == set()
        conn.close()
        admin_sql(kind, give)
        r = cli("--db", as_user, "subscribe", "VM.*", "--to", "https://h.example/x")
        assert r.exit_code == 0, r.stderr
    finally:
        if kind == "postgresql":
            admin_sql(kind, f"ALTER DATABASE {url.database} OWNER TO postgres")
            conn = connect(url)
            conn.execute(f"DROP OWNED BY {user}")
            conn.close()
            admin_sql(kind, f"DROP USER IF EXISTS {user}")
        else:
            admin_sql(kind, f"DROP USER IF EXISTS '{user}'@'%'")


def test_a_connection_the_server_dropped_is_opened_again(server_db: str) -> None:  # noqa: F811
    """A database restart or fail-over ends the store's connection: the next read opens a
    new one, and so does the next transaction."""
    store = open_store(server_db, {})
    mysql = store.dialect.name == "mysql"
    try:
        for use in ("read", "write"):
            (conn_id,) = store.conn.execute(
                "SELECT CONNECTION_ID()" if mysql else "SELECT pg_backend_pid()"
            ).fetchone()
            kind = "mysql" if mysql else "postgresql"
            admin_sql(
                kind, f"KILL {conn_id}" if mysql else f"SELECT pg_terminate_backend({conn_id})"
            )
            if use == "read":
                assert store.subscriptions() == []
            else:
                with store.transaction():
                    store.insert_mute(Mute(None, None, "VM.*", "r", "2026-11-26T00:00:00Z", "2099"))
        assert [m.reason for m in store.mutes()] == ["r"]
    finally:
        store.close()


def test_new_pending_rows_get_their_own_ids_from_one_multi_row_insert(server_db: str) -> None:  # noqa: F811
    """The outbox writes new deliveries with multi-row INSERTs and gives each row the id
    the database gave it: PostgreSQL's RETURNING, or MySQL's first id and its step (a
    Galera cluster numbers auto_increment_increment apart; set to 3 here)."""
    store = open_store(server_db, {})
    try:
        if store.dialect.name == "mysql":
            store.conn.execute("SET SESSION auto_increment_increment = 3")
        outbox = Outbox(store, 100)
        for batch in range(2):
            rows = [
                PendingRow(1, from_normalised({"id": f"ev-{batch}-{i}", "type": "VM.START"}),
                           f"vm-{i}", 0.0, claimed=False)
                for i in range(7)
            ]  # fmt: skip
            outbox.commit(Changes(new=rows))
            stored = dict(store.conn.execute("SELECT event_id, id FROM pending").fetchall())
            assert {r.event.id: r.id for r in rows} == {
                k: v for k, v in stored.items() if k.startswith(f"ev-{batch}-")
            }
            assert [r.id for r in rows] == sorted(r.id for r in rows)  # acceptance order
    finally:
        store.close()


@pytest.mark.mariadb
def test_a_mariadb_database_in_latin1_keeps_any_text(cli) -> None:
    """A database made without CHARACTER SET utf8mb4 (latin1 is MariaDB's default on many
    servers): the store's tables are utf8mb4 all the same, so an emoji in a template or
    an event is kept, not an internal error."""
    with fresh_database("mysql", " CHARACTER SET latin1") as url:
        r = cli("--db", url, "subscribe", "VM.*", "--name", "emoji",
                "--to", "https://hooks.example.com/x", "--title", "\U0001f525 {type} \u2603")  # fmt: skip
        assert r.exit_code == 0, r.stderr
        r = cli("--db", url, "show", "emoji", "--json")
        assert json.loads(r.stdout)["title"] == "\U0001f525 {type} \u2603"


@pytest.mark.mariadb
@pytest.mark.parametrize("way", ["returning", "numbered", "one-by-one"])
def test_new_ids_are_known_whichever_way_mysql_gives_them(way: str) -> None:
    """MariaDB 10.5+ returns a multi-row INSERT's ids; MySQL numbers them from the first
    (innodb_autoinc_lock_mode 0 or 1) or cannot (2: a row at a time). Each way, forced
    on this MariaDB, while two connections insert at once: every row written gets the
    id the store reports for it."""
    with fresh_database("mysql") as url:
        stores = [open_store(url, {}), open_store(url, {})]
        try:
            for store in stores:
                store.conn._returning = way == "returning"  # forced: the way under test
                store.conn._id_step = 0 if way == "one-by-one" else 1
            got: dict[int, str] = {}

            def insert(n: int) -> None:
                store = stores[n]
                for batch in range(5):
                    names = [f"ev-{n}-{batch}-{i}" for i in range(40)]
                    with store.transaction():
                        ids = store.insert_ids(
                            "pending",
                            ("endpoint_id", "event_id", "event_type", "resource", "payload",
                             "accepted", "next_at"),
                            [(n, name, "VM.START", name, "{}", 0.0, 0.0) for name in names],
                        )  # fmt: skip
                    got.update(zip(ids, names, strict=True))

            threads = [threading.Thread(target=insert, args=(n,)) for n in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            stored = dict(stores[0].conn.execute("SELECT id, event_id FROM pending").fetchall())
        finally:
            for store in stores:
                store.close()
    assert len(got) == 400 and got == stored
