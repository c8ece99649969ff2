"""`csnotify store copy --to URL`: a running single-host SQLite store moved into a
MariaDB or PostgreSQL database, everything that is state with it (issue 15, point 6)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from dbservers import server_db  # noqa: F401 - fixture
from helpers import file_digest, run_process
from receivers import Answer, Receiver

from csnotify.events import from_normalised
from csnotify.pacing import Batch
from csnotify.store import PendingBatches, SourceState, open_store
from csnotify.storecopy import TABLES


def event(n: int) -> str:
    return json.dumps({"id": f"ev-{n}", "type": "VM.START", "resource_id": f"vm-{n}"})


def table_rows(url_or_path: str, table: str) -> list[tuple]:
    """A table's rows as comparable values, without what the copy makes anew (a server's
    insertion counter) or ends on purpose (claims of the source's listeners)."""
    store = open_store(url_or_path, {})
    try:
        cursor = store.conn.execute(f"SELECT * FROM {table}")  # noqa: S608
        columns = [d[0] for d in cursor.description]
        keep = [i for i, c in enumerate(columns) if c not in ("seq", "owner", "lease")]
        return sorted((tuple(str(r[i]) for i in keep) for r in cursor.fetchall()), key=lambda r: r)
    finally:
        store.close()


def test_store_copy_moves_everything_that_is_state(cli, db_file: Path, server_db: str) -> None:  # noqa: F811
    down = {"yes": True}
    with Receiver() as ok, Receiver(lambda _r: Answer(503) if down["yes"] else Answer()) as bad:
        r = cli("subscribe", "VM.*", "--to", ok.url, "--to", bad.url, "--name", "vms",
                "--max-per-minute", "50")  # fmt: skip
        assert r.exit_code == 0, r.stderr
        r = cli("-c", "failures.disable_after=2", "-c", "delivery.retry_schedule=0s", "dispatch",
                "-", input="\n".join(event(n) for n in range(5)) + "\n", expect=1)  # fmt: skip
        assert (
            cli("mute", "vms", "--pattern", "VM.STOP", "--for", "1h", "--reason", "x").exit_code
            == 0
        )
        store = open_store(str(db_file), {})
        try:
            state = SourceState(store)
            state.save_cursor("api", {"created": "2026-11-26T08:00:00Z", "ids": ["a"]})
            # processes that used the source: not copied (status on the target shows
            # only what runs on it)
            state.save_listener("elsewhere:1:run", "amqp", {"host": "elsewhere", "pid": 1,
                                "started": "2026-11-26T08:00:00Z", "running": True})  # fmt: skip
            state.save_cursor("serve:127.0.0.1:8787", {"url": "http://127.0.0.1:8787"})
            with store.transaction():
                state.remember([("bus-1", "d1"), ("bus-2", "d1")])
                held = Batch("digest", time.time())
                held.add(from_normalised({"id": "ev-held", "type": "VM.STOP"}))
                PendingBatches(store).write([(1, ("digest", held.due, held.to_doc()))], "")
        finally:
            store.close()
        (bad_ep,) = [
            e for e in cli("show", "vms", "--json").json()["endpoints"] if e["uri"] == bad.url
        ]
        assert (bad_ep["enabled"], bad_ep["backlog"], bad_ep["total_failures"]) == (False, 3, 2)

        token = cli("token", "create", "--account", "acme", "--json").json()
        r = cli("store", "copy", "--to", server_db, "--json")
        assert r.exit_code == 0, r.stderr
        copied = r.json()["copied"]
        assert copied["api_tokens"] == 1  # the API's clients go on working
        assert [t["id"] for t in cli("--db", server_db, "token", "list", "--json").json()] == [
            token["id"]
        ]
        assert table_rows(server_db, "listeners") == []
        assert [r[0] for r in table_rows(server_db, "cursors")] == ["api"]
        assert copied["pending"] == 3 and copied["mutes"] == 1 and copied["seen_events"] == 2
        for table in TABLES:
            source_rows = table_rows(str(db_file), table)
            if table == "cursors":  # a process's row, not a position
                source_rows = [r for r in source_rows if not r[0].startswith("serve:")]
            assert table_rows(server_db, table) == source_rows, table

        # the server database is the store now: counters, switches, the waiting deliveries
        shown = cli("--db", server_db, "show", "vms", "--json").json()
        assert shown == cli("show", "vms", "--json").json()
        down["yes"] = False
        assert cli("--db", server_db, "enable", "vms", "--endpoint", bad.url).exit_code == 0
        r = run_process("--db", server_db, "listen", "--source", "stdin", input="")
        assert r.exit_code == 0, r.stderr
        assert sorted(req.json()["event"]["id"] for req in bad.requests[2:]) == [
            "ev-2", "ev-3", "ev-4",
        ]  # fmt: skip
        assert "ev-held" in [req.json()["event"]["id"] for req in ok.requests]  # the digest
        # new rows get ids after the copied ones
        r = cli("--db", server_db, "subscribe", "VM.*", "--to", ok.url, "--name", "more")
        assert r.exit_code == 0, r.stderr

    # a store that holds something is not overwritten unless told
    before = table_rows(server_db, "subscriptions")
    r = cli("store", "copy", "--to", server_db, expect=2)
    assert r.exit_code == 2
    assert "is not empty (2 subscriptions" in r.stderr and "--replace" in r.stderr
    assert table_rows(server_db, "subscriptions") == before
    # nor replaced beneath a listener that runs on it (here on another host, beating)
    target = open_store(server_db, {})
    run = {"host": "elsewhere.example", "pid": 7, "running": True, "heartbeat_s": 5.0,
           "started": "2026-11-26T08:00:00Z"}  # fmt: skip
    try:
        SourceState(target).save_listener("elsewhere.example:7:x", "amqp", run)
        r = cli("store", "copy", "--to", server_db, "--replace", expect=2)
        assert "is in use: a amqp listener runs on it (host elsewhere.example, pid 7)" in r.stderr
        assert table_rows(server_db, "subscriptions") == before
        SourceState(target).save_listener(
            "elsewhere.example:7:x", "amqp", {**run, "running": False}
        )
    finally:
        target.close()
    r = cli("store", "copy", "--to", server_db, "--replace")
    assert r.exit_code == 0, r.stderr
    assert table_rows(server_db, "subscriptions") == table_rows(str(db_file), "subscriptions")


def test_store_copy_bad_targets_are_one_line_and_write_nothing(cli, db_file: Path) -> None:
    assert cli("subscribe", "VM.*", "--to", "https://h.example/").exit_code == 0
    digest = file_digest(db_file)
    r = cli("store", "copy", "--to", "mysql://root:hunter2@127.0.0.1:1/events", expect=3)
    assert r.exit_code == 3
    assert "mysql://root:********@127.0.0.1:1/events" in r.stderr
    assert "hunter2" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.rstrip().endswith("(check --to)")
    not_a_store = db_file.parent / "events.json"
    not_a_store.write_text('{"not": "a database"}' * 100)
    r = cli("store", "copy", "--to", str(not_a_store), expect=2)
    assert "file is not a database; check --to" in r.stderr, r.stderr
    r = cli("store", "copy", "--to", "redis://127.0.0.1:6379/0", expect=2)
    assert r.exit_code == 2 and "the scheme 'redis://' is not a store" in r.stderr
    r = cli("store", "copy", "--to", str(db_file), expect=2)
    assert r.exit_code == 2 and "is the store being copied" in r.stderr
    # the option named is the one given; a URL on stdin must be there, and alone
    for bad in ("foo://x/y", "mysql://root@127.0.0.1:3306/", "mysql://root:pw@h:port/db"):
        r = cli("store", "copy", "--to", bad, expect=2)
        assert r.stderr.startswith("csnotify: error: --to: "), r.stderr
        assert "pw" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    for given, said in (("", "got nothing"), ("  \n\n", "got nothing"),
                        ("mysql://root@127.0.0.1/a\nextra\n", "got 2 lines")):  # fmt: skip
        r = cli("store", "copy", "--to", "-", input=given, expect=2)
        assert "--to -: give the target's URL on one line of stdin" in r.stderr
        assert said in r.stderr
    r = cli("store", "copy", "--to", " ", expect=2)
    assert "--to: give the target store" in r.stderr
    assert file_digest(db_file) == digest
