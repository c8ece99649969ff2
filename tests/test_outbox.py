"""Delivery that never stalls: an event is accepted once its deliveries are in the store;
each endpoint drains its own pending deliveries, in order per resource, with retries kept
in the store and a bounded backlog.

Everything through the real CLI (listen as a separate process), the real RabbitMQ, real
HTTP receivers (healthy, never answering, failing, 410, 429) and a real SQLite file; the
tests that take ``backend`` run on MariaDB and PostgreSQL too. Bus
messages are built as CloudStack publishes them: UUIDs, no level, every phase of an
operation (Scheduled, Started, Completed)."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

from dbservers import backend  # noqa: F401 - fixture
from helpers import run_process
from receivers import Answer, Receiver
from services import bus, simulator, wait_for  # noqa: F401 - fixtures
from test_listen import api_env, queue_exists, start_listen, stop, subscribe

USER = "5e4f3c10-8c3d-11ee-9a7b-0242ac120002"
ACCOUNT = "5e4f1a2b-8c3d-11ee-9a7b-0242ac120002"
PHASES = ("Scheduled", "Started", "Completed")


def operation(vm: str, n: int) -> list[tuple[str, bytes]]:
    """One VM.START as the bus carries it: three ActionEvents (Gson key order, no nulls)."""
    key = f"management-server.ActionEvent.VM-START.VirtualMachine.{vm}"
    out = []
    for phase in PHASES:
        body = {
            "eventDateTime": f"2026-11-26 10:{n // 60 % 60:02d}:{n % 60:02d} +0000",
            "entityuuid": vm,
            "description": f"starting Vm. Vm Id: {n}",
            "event": "VM.START",
            "user": USER,
            "account": ACCOUNT,
            "entity": "VirtualMachine",
            "status": phase,
            "VirtualMachine": vm,
        }
        out.append((key, json.dumps(body, separators=(",", ":")).encode()))
    return out


def operations(count: int) -> list[tuple[str, bytes]]:
    """``count`` operations on ``count`` VMs, their phases interleaved as on a busy bus."""
    ops = [operation(str(uuid.uuid4()), n) for n in range(count)]
    return [msg for i in range(3) for op in ops for msg in op[i : i + 1]]


def phases_by_vm(rx: Receiver) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = defaultdict(list)
    for body in rx.bodies():
        seen[body["event"]["resource_id"]].append(body["event"]["state"])
    return seen


def status(env: dict[str, str]) -> dict:
    r = run_process("status", "--json", env={**os.environ, **env})
    assert r.exit_code == 0, r.stderr
    return r.json()


def endpoint(report: dict, url: str) -> dict:
    (ep,) = [e for e in report["endpoints"] if e["uri"] == url]
    return ep


def pending_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM pending").fetchone()[0])


# -- isolation on the paths operators run ------------------------------------------------


def test_amqp_a_hanging_and_a_failing_endpoint_hold_up_nobody(tmp_path: Path, bus) -> None:  # noqa: F811
    """The recommended deployment: listen on the bus, three endpoints, one never answers
    and one fails every time. The healthy one gets every event, per VM in order; the bus
    is drained (every message acknowledged) while the others still have a backlog."""
    messages = operations(200)  # 600 messages
    with (
        Receiver() as healthy,
        Receiver(lambda _r: Answer(200, delay=60)) as hanging,
        Receiver(lambda _r: Answer(500, b"down")) as failing,
    ):
        for name, rx in (("ok", healthy), ("hang", hanging), ("fail", failing)):
            subscribe("VM.*", "--to", rx.url, "--name", name, "--category", "*")
        env = {**bus.env(), "CSNOTIFY_DELIVERY_TIMEOUT": "3"}
        listen = start_listen("--source", "amqp", env=env)
        try:
            assert wait_for(lambda: queue_exists(bus), 20), "listen did not declare its queue"
            bus.publish_many(messages, rate=200)
            assert wait_for(lambda: len(healthy.requests) >= 600, 30), len(healthy.requests)
            assert wait_for(lambda: bus.queued() == 0, 10)  # acknowledged: safe in the store
            report = status(env)
            assert endpoint(report, hanging.url)["backlog"] > 0
            assert endpoint(report, failing.url)["backlog"] > 0
            assert endpoint(report, failing.url)["next_attempt"] is not None
        finally:
            rc, _out, err = stop(listen, timeout=30)
    assert rc == 0, err
    by_vm = phases_by_vm(healthy)
    assert len(by_vm) == 200
    assert all(states == list(PHASES) for states in by_vm.values())
    # a VM's later phases wait for its first: the hanging endpoint only ever saw Scheduled
    assert {s for states in phases_by_vm(hanging).values() for s in states} == {"Scheduled"}
    assert len(hanging.requests) > 1  # ... and several VMs at once
    # what the dead ones did not get waits in the store, not in the broker
    assert bus.queued() == 0
    report = status(env)
    for rx in (hanging, failing):  # nothing given up yet: the schedule runs for an hour
        assert endpoint(report, rx.url)["backlog"] == 600
        assert endpoint(report, rx.url)["total_failures"] == 0


def test_api_a_hanging_endpoint_holds_up_nobody(tmp_path: Path) -> None:
    with (
        Receiver() as healthy,
        Receiver(lambda _r: Answer(200, delay=60)) as hanging,
        simulator(tmp_path, "--count", "300", "--rate", "300/s") as sim,
    ):
        subscribe("*", "--to", healthy.url, "--name", "ok", "--category", "*")
        subscribe("*", "--to", hanging.url, "--name", "hang", "--category", "*")
        env = {**api_env(sim), "CSNOTIFY_DELIVERY_TIMEOUT": "3"}
        listen = start_listen("--source", "api", "--interval", "0.3", "--since", "10m", env=env)
        try:
            sim.wait_generated()
            expected = [r["list_item"]["id"] for r in sim.recorded() if r["list_item"]]
            assert wait_for(lambda: len(healthy.requests) >= len(expected), 30)
        finally:
            rc, _out, err = stop(listen, timeout=30)
    assert rc == 0, err
    assert sorted(b["event"]["id"] for b in healthy.bodies()) == sorted(expected)
    # every event was accepted (the cursor moved on): the hanging endpoint's share waits
    # in the store, and the next listen starts from the cursor, repeating nothing
    assert endpoint(status(env), hanging.url)["backlog"] == len(expected)


# -- order, concurrency ------------------------------------------------------------------


def test_order_per_resource_with_many_in_flight(tmp_path: Path, bus, backend) -> None:  # noqa: F811
    """Ten VMs, three phases each: a receiver that is slow at random still gets each VM's
    phases in order, while it is sent several VMs at once."""
    in_flight, most = [0], [0]
    lock = threading.Lock()

    def slow(_req) -> Answer:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.05 + (hash(_req.body) % 7) / 100)
        with lock:
            in_flight[0] -= 1
        return Answer(200)

    with Receiver(slow) as rx:
        subscribe("VM.*", "--to", rx.url, "--name", "ordered", "--category", "*")
        env = bus.env()
        assert (
            run_process("listen", "--source", "amqp", "--once", env={**os.environ, **env}).exit_code
            == 0
        )
        bus.publish_many(operations(10))
        r = run_process("listen", "--source", "amqp", "--once", env={**os.environ, **env})
        assert r.exit_code == 0, r.stderr
    by_vm = phases_by_vm(rx)
    assert len(by_vm) == 10 and all(s == list(PHASES) for s in by_vm.values())
    assert most[0] > 1, "deliveries to one endpoint did not overlap"


def test_strict_order_sends_one_at_a_time_in_acceptance_order(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": f"ev-{i}", "type": "VM.START", "resource_id": f"vm-{i % 4}",
                    "created": "2026-11-26T10:00:00Z"})
        for i in range(20)
    ]  # fmt: skip
    with Receiver(lambda _r: Answer(200, delay=0.02)) as rx:
        subscribe("*", "--to", rx.url, "--name", "strict", "--strict-order")
        r = run_process("dispatch", "-", input="\n".join(lines) + "\n")
        assert r.exit_code == 0, r.stderr
        shown = run_process("show", "strict", "--json").json()
    assert shown["endpoints"][0]["strict_order"] is True
    assert [b["event"]["id"] for b in rx.bodies()] == [f"ev-{i}" for i in range(20)]
    starts = [req.at for req in rx.requests]
    assert all(b - a >= 0.015 for a, b in itertools.pairwise(starts))


# -- retries that outlive the process ----------------------------------------------------


def test_a_retry_survives_a_restart_with_the_same_webhook_id(tmp_path: Path, db_file: Path) -> None:
    answers = iter([Answer(503, b"busy")])
    with Receiver(lambda _r: next(answers, Answer(200))) as rx:
        subscribe("*", "--to", rx.url, "--name", "later", "--key", "generate")
        event = json.dumps({"id": "ev-retry", "type": "VM.STOP", "created": "2026-11-26T10:00:00Z"})
        env = {**os.environ, "CSNOTIFY_DELIVERY_RETRY_SCHEDULE": "0s,15s"}
        r = run_process("dispatch", "-", "--json", input=event + "\n", env=env)
        assert r.exit_code == 0, r.stderr
        assert r.json()["waiting"] == 1 and r.json()["failed"] == 0
        assert len(rx.requests) == 1
        ep = run_process("show", "later", "--json").json()["endpoints"][0]
        assert ep["backlog"] == 1 and ep["pending_error"] == "HTTP 503: busy"
        assert ep["next_attempt"] is not None
        # a new process (listen) makes the retry when it is due
        listen = subprocess.Popen(
            [sys.executable, "-m", "csnotify", "listen", "--source", "stdin"],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert wait_for(lambda: len(rx.requests) >= 2, 25)
            assert wait_for(lambda: pending_rows(db_file) == 0, 5)
        finally:
            listen.communicate(input="", timeout=20)
    first, second = rx.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    # 15 s with up to 20% jitter: always beyond the 10 s a one-shot run waits
    assert second.at - first.at >= 15 * 0.8
    (row,) = run_process("deliveries", "later", "--json").json()
    assert row["status"] == "delivered" and row["attempts"] == 2


def test_the_schedule_ends_in_a_counted_failure(tmp_path: Path) -> None:
    with Receiver(lambda _r: Answer(500, b"nope")) as rx:
        subscribe("*", "--to", rx.url, "--name", "doomed")
        env = {**os.environ, "CSNOTIFY_DELIVERY_RETRY_SCHEDULE": "0s,0.1s,0.2s"}
        event = json.dumps(
            {"id": "ev-doomed", "type": "VM.STOP", "created": "2026-11-26T10:00:00Z"}
        )
        r = run_process("dispatch", "-", "--json", input=event + "\n", env=env)
    assert r.exit_code == 1
    assert r.json()["failed"] == 1 and r.json()["waiting"] == 0
    assert len(rx.requests) == 3
    (row,) = run_process("deliveries", "doomed", "--json").json()
    assert row["status"] == "failed" and row["attempts"] == 3 and row["error"] == "HTTP 500: nope"
    ep = run_process("show", "doomed", "--json").json()["endpoints"][0]
    assert ep["total_failures"] == 1 and ep["backlog"] == 0


# -- a bounded backlog -------------------------------------------------------------------


def test_backlog_cap_gives_up_the_oldest_and_counts_them(tmp_path: Path, backend) -> None:  # noqa: F811
    with Receiver(lambda _r: Answer(500, b"down")) as rx:
        subscribe("*", "--to", rx.url, "--name", "capped")
        env = {**os.environ, "CSNOTIFY_DELIVERY_RETRY_SCHEDULE": "0s,1h",
               "CSNOTIFY_DELIVERY_MAX_BACKLOG": "5"}  # fmt: skip
        lines = [
            json.dumps({"id": f"ev-{i:02d}", "type": "VM.STOP", "created": "2026-11-26T10:00:00Z"})
            for i in range(20)
        ]
        r = run_process("dispatch", "-", "--json", input="\n".join(lines) + "\n", env=env)
    assert r.exit_code in (0, 1), r.stderr
    warnings = [line for line in r.stderr.splitlines() if "delivery.max_backlog" in line]
    assert len(warnings) == 1, r.stderr
    ep = run_process("show", "capped", "--json").json()["endpoints"][0]
    assert ep["backlog"] == 5 and ep["total_dropped"] == 15
    dropped = run_process("deliveries", "capped", "--json").json()
    assert sum(row["status"] == "dropped" for row in dropped) == 15


# -- settings ----------------------------------------------------------------------------


def test_new_settings_are_checked_and_old_ones_named(cli, config_file: Path) -> None:
    for key, value, says in [
        ("delivery.retry_schedule", "0s,5x", "delivery.retry_schedule: a wait '5x': use a"),
        ("delivery.retry_schedule", "", "give 1 to 50 waits"),
        ("delivery.max_age", "soon", "delivery.max_age: the duration 'soon'"),
        ("delivery.per_endpoint", "0", "delivery.per_endpoint must be at least 1"),
        ("delivery.max_backlog", "0", "delivery.max_backlog must be at least 1"),
    ]:
        r = cli("config", "set", key, value, expect=2)
        assert r.exit_code == 2 and says in r.stderr, (key, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    assert not config_file.exists()  # nothing written
    r = cli("-c", "delivery.retries=3", "config", "show", expect=2)
    assert r.exit_code == 2
    assert "'delivery.retries' is gone; use delivery.retry_schedule" in r.stderr
    config_file.parent.mkdir(parents=True)
    config_file.write_text("[delivery]\nretries = 3\ntimeout = 4.0\n")
    r = cli("config", "show", "--json")
    assert r.exit_code == 0
    values = r.json()
    assert values["delivery.timeout"] == 4.0 and "delivery.retries" not in values
    assert "delivery.retries is no longer used" in r.stderr


# -- found by an operator's run-through of a fresh clone ---------------------------------


def test_enable_sends_what_waited_now_and_the_first_wait_is_honoured(tmp_path: Path) -> None:
    down = {"yes": True}
    with Receiver(lambda _r: Answer(503) if down["yes"] else Answer(200)) as rx:
        subscribe("*", "--to", rx.url, "--name", "later")
        env = {**os.environ, "CSNOTIFY_DELIVERY_RETRY_SCHEDULE": "0s,1h"}
        event = json.dumps({"id": "ev-w", "type": "VM.STOP", "created": "2026-11-26T10:00:00Z"})
        first = run_process("dispatch", "-", "--json", input=event + "\n", env=env).json()
        assert first["waiting"] == 1 and len(rx.requests) == 1
        # a second run counts only its own deliveries as waiting
        other = json.dumps({"id": "ev-x", "type": "VM.STOP", "created": "2026-11-26T10:00:01Z"})
        again = run_process("dispatch", "-", "--json", input=other + "\n", env=env).json()
        assert again["waiting"] == 1
        down["yes"] = False
        assert "when enabled" not in run_process("show", "later").stdout  # a time: in 1 h
        assert run_process("disable", "later", "--endpoint", rx.url).exit_code == 0
        for shown in (run_process("show", "later"), run_process("status")):
            assert "when enabled" in shown.stdout and " due " not in shown.stdout, shown.stdout
        assert run_process("enable", "later", "--endpoint", rx.url).exit_code == 0
        r = run_process("dispatch", "-", "--json", input="", env=env)  # due now, not in 1 h
        assert r.json()["delivered"] == 2, r.stdout
    assert sorted(b["event"]["id"] for b in rx.bodies()[-2:]) == ["ev-w", "ev-x"]
    # the first step of the schedule is a wait too
    with Receiver() as rx2:
        subscribe("*", "--to", rx2.url, "--name", "patient")
        env = {**os.environ, "CSNOTIFY_DELIVERY_RETRY_SCHEDULE": "30s,1s"}
        event = json.dumps({"id": "ev-p", "type": "VM.STOP", "created": "2026-11-26T10:00:00Z"})
        r = run_process("dispatch", "-", "--json", input=event + "\n", env=env)
        assert r.json()["waiting"] >= 1 and rx2.requests == []


def test_operator_mistakes_are_refused_or_said(tmp_path: Path) -> None:
    r = run_process("--db", "/proc/nope/csnotify.db", "list")
    assert r.exit_code == 2 and "cannot open store /proc/nope/csnotify.db" in r.stderr
    r = run_process("config", "set", "delivery.max_age", "0s")
    assert r.exit_code == 2 and "use at least 1m" in r.stderr
    r = run_process("listen", "--source", "api", "--once", "--since", "2099-01-01")
    assert r.exit_code == 2 and "--since '2099-01-01' is in the future" in r.stderr
    r = run_process("config", "show", env={**os.environ, "CSNOTIFY_DELIVERY_RETRIES": "3"})
    assert r.exit_code == 0 and "$CSNOTIFY_DELIVERY_RETRIES is no longer used" in r.stderr
    subscribe("*", "--to", "http://127.0.0.1:9/dead", "--to", "http://127.0.0.1:9/other",
              "--name", "two")  # fmt: skip
    env = {**os.environ, "CSNOTIFY_DELIVERY_RETRY_SCHEDULE": "0s,1h"}
    event = json.dumps({"id": "ev-d", "type": "VM.STOP", "created": "2026-11-26T10:00:00Z"})
    assert run_process("dispatch", "-", input=event + "\n", env=env).exit_code == 0
    r = run_process("update", "two", "--remove-to", "http://127.0.0.1:9/dead")
    assert r.exit_code == 0
    assert "1 pending deliveries of the removed endpoint(s) were given up" in r.stderr
