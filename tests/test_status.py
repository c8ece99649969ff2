"""`csnotify status`: listeners, cursors, queue depth, endpoints; --json and --watch."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from helpers import load_fixture, run_process
from receivers import Receiver
from services import bus, simulator  # noqa: F401 - fixtures


def test_status_of_a_fresh_store(cli) -> None:
    r = cli("status")
    assert r.exit_code == 0
    assert "no listener has run with this store yet" in r.stdout
    assert "subscriptions: 0 enabled of 0" in r.stdout
    report = cli("status", "--json").json()
    assert set(report) == {
        "store",
        "listeners",
        "cursors",
        "queue",
        "backlog",
        "subscriptions",
        "mutes",
        "endpoints",
        "apis",
    }


def test_status_after_listening(tmp_path) -> None:
    items = load_fixture("api/listevents_response.json")["listeventsresponse"]["event"]
    with Receiver() as rx:
        assert (
            run_process("subscribe", "*", "--category", "*", "--to", rx.url, "--name", "all")
        ).exit_code == 0
        assert run_process("subscribe", "*", "--to", "http://127.0.0.1:9/", "--name", "dead",
                           "--disabled").exit_code == 0  # fmt: skip
        text = "\n".join(json.dumps(i) for i in items) + "\n"
        assert run_process("listen", "--source", "stdin", input=text).exit_code == 0
    report = run_process("status", "--json").json()
    (listener,) = report["listeners"]
    assert listener["source"] == "stdin"
    assert (listener["events"], listener["delivered"], listener["failed"]) == (3, 3, 0)
    assert listener["running"] is False
    eps = {e["subscription"]: e for e in report["endpoints"]}
    assert eps["all"]["total_successes"] == 3 and eps["dead"]["subscription_enabled"] is False
    text = run_process("status").stdout
    host = socket.gethostname()
    assert (listener["host"], listener["pid"]) == (host, listener["pid"]) and listener["pid"]
    assert (
        f"listener stdin on {host} pid {listener['pid']}: stopped, 3 events, 3 delivered," in text
    )
    assert "sub. disabled" in text


def test_status_shows_the_api_cursor(tmp_path) -> None:
    with simulator(tmp_path, "--count", "20", "--rate", "0") as sim:
        sim.wait_generated()
        env = {**os.environ, "CSNOTIFY_CLOUDSTACK_URL": sim.url, "CSNOTIFY_CLOUDSTACK_API_KEY": "test-api-key",
               "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "test-secret-key", "CSNOTIFY_DELIVERY_RETRY_SCHEDULE": "0s"}  # fmt: skip
        run_process("subscribe", "*", "--to", "http://127.0.0.1:9/")
        assert (
            run_process("listen", "--source", "api", "--once", "--since", "1h", env=env).exit_code
            == 0
        )
    (cursor,) = run_process("status", "--json").json()["cursors"]
    assert cursor["source"] == f"api:{sim.url}"
    assert cursor["created"].endswith("Z") and cursor["ids_at_created"] >= 1


def test_status_shows_the_queue_depth(bus) -> None:  # noqa: F811
    env = {**os.environ, **bus.env()}
    run_process("subscribe", "*", "--to", "http://127.0.0.1:9/")
    assert run_process("listen", "--source", "amqp", "--once", env=env).exit_code == 0
    sample = load_fixture("amqp/ActionEvent.json")
    for _ in range(3):
        bus.publish(sample["routing_key"], sample["body_raw"].encode())
    report = run_process("status", "--json", env=env).json()
    assert report["queue"]["name"] == bus.queue and report["queue"]["depth"] == 3
    assert "waiting" in run_process("status", env=env).stdout


def test_status_watch_keeps_reporting() -> None:
    from services import wait_for

    proc = subprocess.Popen([sys.executable, "-m", "csnotify", "status", "--watch", "--json", "--interval", "0.3"],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    lines: list[str] = []  # read as they come: a loaded machine may take seconds to start it
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    assert wait_for(lambda: len(lines) >= 3, 60)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    reader.join(timeout=10)
    reports = [json.loads(line) for line in lines]
    assert len(reports) >= 3 and all("subscriptions" in r for r in reports)


def test_a_killed_listener_shows_stopped_not_running(tmp_path) -> None:
    from services import wait_for

    assert (
        run_process("subscribe", "*", "--to", "http://127.0.0.1:9/", "--name", "s").exit_code == 0
    )
    # stdin stays open: the listener runs until it is killed
    listen = subprocess.Popen([sys.executable, "-m", "csnotify", "listen", "--source", "stdin"],
                              stdin=subprocess.PIPE, text=True)  # fmt: skip
    try:

        def state() -> str | None:
            listeners = run_process("status", "--json").json()["listeners"]
            return listeners[0]["state"] if listeners else None

        assert wait_for(lambda: state() == "running", 20)
        assert f"pid {listen.pid}: running," in run_process("status").stdout
        listen.kill()
        listen.wait(timeout=10)
    finally:
        listen.kill()
    (listener,) = run_process("status", "--json").json()["listeners"]
    assert listener["running"] is True  # what it last said: it had no chance to say more
    assert listener["state"] == "stopped"
    assert (
        listener["state_reason"]
        == f"process {listen.pid} is gone without stopping cleanly (killed?)"
    )
    assert (
        f"pid {listen.pid}: stopped (process {listen.pid} is gone" in run_process("status").stdout
    )


def test_a_listener_whose_heartbeat_stopped_is_stale(db_file) -> None:
    # A listener on another host (whose pid cannot be checked from here) last beat a
    # minute ago, with a 5 s heartbeat.
    import sqlite3

    assert run_process("list").exit_code == 0  # creates the store
    position = {"events": 1, "running": True, "pid": 4242, "host": "elsewhere.example",
                "heartbeat_s": 5.0, "started": "2026-11-25T10:00:00Z"}  # fmt: skip
    minute_ago = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - 60))
    with sqlite3.connect(db_file) as conn:
        conn.execute("INSERT INTO listeners (id, host, pid, source, started, updated, doc)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?)",
                     ("elsewhere.example:4242:x", "elsewhere.example", 4242, "amqp",
                      position["started"], minute_ago, json.dumps(position)))  # fmt: skip
    (listener,) = run_process("status", "--json").json()["listeners"]
    assert listener["state"] == "stale"
    assert listener["state_reason"].startswith("no heartbeat for 6")  # 60 s or a little more
    assert "from process 4242 on elsewhere.example" in listener["state_reason"]
    assert (
        "listener amqp on elsewhere.example pid 4242: stale (no heartbeat for"
        in run_process("status").stdout
    )
