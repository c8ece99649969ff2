"""The SQLite store: schema, migrations, WAL, file modes, default path, concurrent writers."""

from __future__ import annotations

import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import run_process

from csnotify.migrations import MIGRATIONS
from csnotify.store import Store

TABLES = {"subscriptions", "endpoints", "deliveries", "cursors", "seen_events", "migrations"}
ENDPOINT_COUNTERS = {
    "enabled", "consecutive_failures", "total_failures", "total_successes", "last_error",
    "last_error_at", "last_success_at", "disabled_reason",
}  # fmt: skip


def test_new_store_has_schema_wal_and_version(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "s.db"
    store = Store.open(path)
    conn = store.conn
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables >= TABLES
    columns = {r[1] for r in conn.execute("PRAGMA table_info(endpoints)")}
    assert columns >= ENDPOINT_COUNTERS
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 10000
    assert store.schema_version == len(MIGRATIONS)
    applied = [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY name")]
    assert applied == [name for name, _ in MIGRATIONS]
    store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for d in (path.parent, path.parent.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_reopening_migrates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store.open(path).close()
    store = Store.open(path)
    assert store.migrate() == []
    store.close()


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
    assert Store.open(path).schema_version == len(MIGRATIONS) == 4
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
    assert store.schema_version == 4
    assert [r[0] for r in store.conn.execute("SELECT name FROM migrations ORDER BY name")] == [
        "m001_initial", "m002_operator_control", "m003_outbox", "m004_outcomes_and_names",
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
    r = cli("--db", str(path), "list")
    assert r.exit_code == 2
    assert "newer than this csnotify knows" in r.stderr


def test_not_a_database_is_one_line_error(cli, tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    r = cli("--db", str(path), "list")
    assert r.exit_code == 2
    assert r.stderr.startswith("csnotify: error: cannot use store")
    assert len(r.stderr.strip().splitlines()) == 1


def test_another_applications_database_is_refused(cli, tmp_path: Path) -> None:
    path = tmp_path / "places.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
    before = path.read_bytes()
    r = cli("--db", str(path), "subscribe", "VM.*", "--to", "https://h.example/")
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
        r = cli("subscribe", "VM.*", "--to", "https://h.example/", "--name", "b")
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
