"""`csnotify listen` end to end, with real parts only: `csnotify simulate` as CloudStack,
the real RabbitMQ on 127.0.0.1:5672, listen as a separate process, a local webhook
receiver counting what arrives."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import load_fixture, run_process
from receivers import Answer, Receiver, closed_port
from services import bus, simulator, wait_for  # noqa: F401 - fixtures

from csnotify.events import parse_bus_body

KEYS = {
    "CSNOTIFY_CLOUDSTACK_API_KEY": "test-api-key",
    "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "test-secret-key",
}


def start_listen(
    *args: str, env: dict[str, str] | None = None, db: Path | None = None
) -> subprocess.Popen[str]:
    full_env = {**os.environ, **(env or {})}
    if db is not None:
        full_env["CSNOTIFY_DB"] = str(db)
    return subprocess.Popen(
        [sys.executable, "-m", "csnotify", "listen", *args],
        env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def stop(proc: subprocess.Popen[str], timeout: float = 15) -> tuple[int, str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def subscribe(*args: str, db: Path | None = None) -> None:
    env = {**os.environ, **({"CSNOTIFY_DB": str(db)} if db else {})}
    r = run_process("subscribe", *args, env=env)
    assert r.exit_code == 0, r.stderr


def received_ids(rx: Receiver) -> list[str]:
    return [b["event"]["id"] for b in rx.bodies()]


def content(event: dict) -> str:
    """What a bus event is, whatever its id (ids carry the occurrence and the listener):
    its state (an async job's phase) and its body."""
    return f"{event['state']}|{json.dumps(event['raw'], sort_keys=True)}"


def received_contents(rx: Receiver) -> list[str]:
    return sorted(content(b["event"]) for b in rx.bodies())


def all_arrived(sim, rx: Receiver, ids_of, settle: float) -> list[str]:
    """Once the simulator has generated everything, wait until the receiver has as many
    requests, then ``settle`` seconds more (nothing more may arrive); the generated ids."""
    sim.wait_generated()
    expected = ids_of(sim)
    assert wait_for(lambda: len(rx.requests) >= len(expected), 60)
    time.sleep(settle)
    return expected


def bus_contents(sim) -> list[str]:
    """Every message the simulator published, twins included (they are two events)."""
    return sorted(
        content(parse_bus_body(r["body_raw"].encode(), r["routing_key"]).as_json())
        for r in sim.recorded()
        if r["routing_key"]
    )


def api_ids(sim) -> list[str]:
    return [r["list_item"]["id"] for r in sim.recorded() if r["list_item"]]


def queue_exists(bus) -> bool:  # noqa: F811
    try:
        bus.queued()
    except Exception:  # noqa: BLE001
        return False
    return True


# -- amqp ---------------------------------------------------------------------------------


def test_amqp_end_to_end_every_event_exactly_once(tmp_path: Path, bus) -> None:  # noqa: F811
    with Receiver() as rx:
        subscribe("*", "--category", "*", "--to", rx.url)
        listen = start_listen("--source", "amqp", env=bus.env())
        try:
            assert wait_for(lambda: queue_exists(bus), 20), "listen did not declare its queue"
            with simulator(tmp_path, "--amqp", bus.url, "--exchange", bus.exchange, "--count", "300",
                           "--rate", "0") as sim:  # fmt: skip
                assert sim.wait_generated() == 300
                expected = bus_contents(sim)
                assert wait_for(lambda: len(rx.requests) >= len(expected), 60)
                time.sleep(0.5)  # nothing more may arrive
        finally:
            rc, _out, err = stop(listen)
    assert rc == 0, err
    got = received_ids(rx)
    assert len(got) == len(set(got)) == len(expected) == 300
    assert received_contents(rx) == expected  # byte-identical twins included, each once
    assert len(set(expected)) < len(expected)  # the simulator published some twins
    assert bus.queued() == 0


def test_amqp_restart_mid_stream_loses_nothing(tmp_path: Path, bus) -> None:  # noqa: F811
    with Receiver() as rx:
        subscribe("*", "--category", "*", "--to", rx.url)
        listen = start_listen("--source", "amqp", env=bus.env())
        assert wait_for(lambda: queue_exists(bus), 20)
        with simulator(tmp_path, "--amqp", bus.url, "--exchange", bus.exchange, "--count", "600",
                       "--rate", "300/s") as sim:  # fmt: skip
            assert wait_for(lambda: len(rx.requests) >= 100, 30)
            rc, _, err = stop(listen)
            assert rc == 0, err
            stopped_at = len(rx.requests)
            listen = start_listen("--source", "amqp", env=bus.env())
            try:
                sim.wait_generated()
                expected = bus_contents(sim)
                assert wait_for(lambda: len(set(received_ids(rx))) >= len(expected), 60)
                time.sleep(0.5)
            finally:
                rc, _, err = stop(listen)
    assert rc == 0, err
    got = received_ids(rx)
    assert 100 <= stopped_at < 600
    assert received_contents(rx) == expected
    duplicates = len(got) - len(set(got))
    assert duplicates == 0  # a clean stop acknowledges what it delivered


def test_two_listeners_share_the_queue(tmp_path: Path, bus) -> None:  # noqa: F811
    db_a, db_b = tmp_path / "a.db", tmp_path / "b.db"
    with Receiver() as rx:
        subscribe("*", "--category", "*", "--to", rx.url + "/a", db=db_a)
        subscribe("*", "--category", "*", "--to", rx.url + "/b", db=db_b)
        a = start_listen("--source", "amqp", env=bus.env(), db=db_a)
        b = start_listen("--source", "amqp", env=bus.env(), db=db_b)
        try:
            assert wait_for(lambda: queue_exists(bus), 20)
            time.sleep(1.0)  # both consumers attached
            with simulator(tmp_path, "--amqp", bus.url, "--exchange", bus.exchange, "--count", "400",
                           "--rate", "400/s") as sim:  # fmt: skip
                expected = all_arrived(sim, rx, bus_contents, settle=0.5)
        finally:
            for proc in (a, b):
                assert stop(proc)[0] == 0
    paths = collections.Counter(r.path for r in rx.requests)
    assert paths["/a"] > 0 and paths["/b"] > 0
    got = received_ids(rx)
    # every event once, by one listener or the other; twins split between them stay two
    assert received_contents(rx) == expected and len(set(got)) == len(got)


def test_new_subscriptions_and_disable_take_effect_without_restart(tmp_path: Path, bus) -> None:  # noqa: F811
    alert = load_fixture("amqp/AlertEvent.json")
    action = load_fixture("amqp/ActionEvent.json")
    with Receiver() as rx:
        subscribe("VM.START", "--to", rx.url + "/vm", "--name", "vm")
        listen = start_listen("--source", "amqp", env=bus.env())
        try:
            assert wait_for(lambda: queue_exists(bus), 20)
            bus.publish(alert["routing_key"], alert["body_raw"].encode())  # not bound yet: dropped
            bus.publish(action["routing_key"], action["body_raw"].encode())
            assert wait_for(lambda: len(rx.requests) == 1, 20)
            subscribe("ALERT.*", "--to", rx.url + "/alerts", "--name", "alerts")
            time.sleep(3)  # picked up within a few seconds
            bus.publish(
                alert["routing_key"], alert["body_raw"].encode().replace(b"10:22:31", b"10:22:32")
            )
            assert wait_for(lambda: any(r.path == "/alerts" for r in rx.requests), 20)
            assert run_process("disable", "vm").exit_code == 0
            time.sleep(3)
            bus.publish(
                action["routing_key"], action["body_raw"].encode().replace(b"10:22:31", b"10:22:33")
            )
            time.sleep(2)
        finally:
            rc, _, err = stop(listen)
    assert rc == 0, err
    assert [r.path for r in rx.requests] == ["/vm", "/alerts"]


def test_malformed_messages_are_acknowledged_and_logged(tmp_path: Path, bus) -> None:  # noqa: F811
    with Receiver() as rx:
        subscribe("*", "--to", rx.url)
        assert (
            run_process(
                "listen", "--source", "amqp", "--once", env={**os.environ, **bus.env()}
            ).exit_code
            == 0
        )
        bus.publish("not.a.cloudstack.key", b'{"event": "VM.START"}')
        bus.publish("management-server.ActionEvent.VM-START.VirtualMachine.x", b"\xff\xfe not json")
        bus.publish("management-server.ActionEvent.VM-START.VirtualMachine.x", b"[1, 2, 3]")
        good = load_fixture("amqp/ActionEvent.json")
        bus.publish(good["routing_key"], good["body_raw"].encode())
        r = run_process("listen", "--source", "amqp", "--once", env={**os.environ, **bus.env()})
    assert r.exit_code == 0, r.stderr
    assert r.stderr.count("rejected message") == 3
    assert "malformed routing key" in r.stderr and "not UTF-8" in r.stderr
    assert len(rx.requests) == 1
    assert bus.queued() == 0


def test_dry_run_and_print_send_and_acknowledge_nothing(tmp_path: Path, bus) -> None:  # noqa: F811
    good = load_fixture("amqp/ActionEvent.json")
    with Receiver() as rx:
        subscribe("VM.*", "--to", rx.url, "--name", "vm")
        env = {**os.environ, **bus.env()}
        assert run_process("listen", "--source", "amqp", "--once", env=env).exit_code == 0
        for i in range(3):  # three operations (byte-identical twins are issue 13's matter)
            body = good["body_raw"].replace("10:22:31", f"10:22:3{i}")
            bus.publish(good["routing_key"], body.encode())
        r = run_process("listen", "--source", "amqp", "--once", "--dry-run", "--print", env=env)
        assert r.exit_code == 0, r.stderr
        lines = r.stdout.splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        shown = [line for line in lines if not line.startswith("{")]
        assert len(events) == 3 and events[0]["type"] == "VM.START"
        assert shown[0].startswith("VM.START ") and shown[0].endswith(f"vm -> {rx.url}")
        assert rx.requests == []
        assert bus.queued() == 3
        r = run_process("listen", "--source", "amqp", "--once", "--print", env=env)
        assert len(r.stdout.splitlines()) == 3 and len(rx.requests) == 3
        assert bus.queued() == 0


def test_sigterm_finishes_in_flight_within_the_timeout(tmp_path: Path, bus) -> None:  # noqa: F811
    good = load_fixture("amqp/ActionEvent.json")
    with Receiver(lambda _r: Answer(200, delay=1.0)) as rx:
        subscribe("*", "--to", rx.url)
        env = {**bus.env(), "CSNOTIFY_DELIVERY_TIMEOUT": "2"}
        listen = start_listen("--source", "amqp", env=env)
        assert wait_for(lambda: queue_exists(bus), 20)
        for i in range(5):
            bus.publish(
                good["routing_key"],
                good["body_raw"].encode().replace(b"10:22:31", f"10:22:4{i}".encode()),
            )
        assert wait_for(lambda: len(rx.requests) >= 1, 10)
        started = time.monotonic()
        rc, _, err = stop(listen)
        took = time.monotonic() - started
    assert rc == 0, err
    assert took < 2 + 1 + 1.5  # delivery.timeout + 1 s, and the interpreter's own exit
    delivered = len(rx.requests)
    # every message was accepted (acknowledged); what was not delivered waits in the store
    assert bus.queued() == 0
    (ep,) = run_process("status", "--json").json()["endpoints"]
    assert ep["backlog"] == 5 - delivered > 0


def test_broker_outage_reconnects_logs_once_and_loses_nothing(tmp_path: Path, bus) -> None:  # noqa: F811
    from services import TcpProxy

    action = load_fixture("amqp/ActionEvent.json")

    def publish(n: int) -> None:
        bus.publish(
            action["routing_key"],
            action["body_raw"].encode().replace(b"10:22:31", f"10:22:{n:02d}".encode()),
        )

    proxy = TcpProxy(5672)
    try:
        with Receiver() as rx:
            subscribe("*", "--to", rx.url)
            env = {**bus.env(), "CSNOTIFY_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}/"}
            listen = start_listen("--source", "amqp", env=env)
            try:
                assert wait_for(lambda: queue_exists(bus), 20)
                publish(1)
                assert wait_for(lambda: len(rx.requests) == 1, 20)
                proxy.cut()
                for n in range(
                    2, 12
                ):  # published while the listener is cut off: they wait in the queue
                    publish(n)
                time.sleep(4)
                proxy.restore()
                arrived = wait_for(lambda: len(rx.requests) == 11, 40)
            finally:
                rc, _out, err = stop(listen)
    finally:
        proxy.close()
    assert arrived, f"{len(rx.requests)} of 11 arrived; listen said:\n{err[-3000:]}"
    assert rc == 0, err
    assert err.count("unreachable") == 1, err  # logged once per outage, not per retry
    assert err.count("reachable again") == 1
    assert len(set(received_ids(rx))) == 11


def test_api_outage_backs_off_and_logs_once(tmp_path: Path) -> None:
    from receivers import closed_port

    env = {
        **os.environ,
        **KEYS,
        "CSNOTIFY_CLOUDSTACK_URL": f"http://127.0.0.1:{closed_port()}/client/api",
    }
    r = run_process("listen", "--source", "api", "--interval", "0.1", "--duration", "4", env=env)
    assert r.exit_code == 0, r.stderr
    assert r.stderr.count("unreachable") == 1
    assert "retrying with backoff" in r.stderr


def test_unreachable_broker_with_once_is_exit_3(tmp_path: Path) -> None:
    from receivers import closed_port

    env = {**os.environ, "CSNOTIFY_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{closed_port()}/"}
    r = run_process("listen", "--source", "amqp", "--once", env=env)
    assert r.exit_code == 3
    notice, error = r.stderr.splitlines()
    assert notice.startswith("csnotify: notice: listening: source amqp")
    assert error.startswith("csnotify: error: cannot connect to RabbitMQ")
    assert "guest:guest" not in r.stderr


def test_a_virtual_host_the_broker_refuses_is_said_in_words(bus) -> None:  # noqa: F811
    env = {**os.environ, **bus.env(),
           "CSNOTIFY_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/no-such-vhost"}  # fmt: skip
    r = run_process("listen", "--source", "amqp", env=env, timeout=30)  # not --once: no retry
    assert r.exit_code == 3
    notice, error = r.stderr.strip().splitlines()  # the start line, then the error
    assert notice.startswith("csnotify: notice: listening: source amqp")
    assert "the broker refused virtual host 'no-such-vhost' to user 'guest'" in error
    assert "Connection.Close object" not in error


def test_listen_says_at_start_what_it_listens_to(tmp_path: Path) -> None:
    assert (
        run_process("subscribe", "*", "--to", "http://127.0.0.1:9/", "--name", "a").exit_code == 0
    )
    assert run_process("subscribe", "*", "--to", "http://127.0.0.1:9/b", "--name", "b",
                       "--disabled").exit_code == 0  # fmt: skip
    r = run_process("listen", "--source", "stdin", input="")
    assert r.exit_code == 0
    assert r.stderr.splitlines() == [
        "csnotify: notice: listening: source stdin, standard input; 2 subscriptions (1 enabled)"
    ]
    env = {**os.environ, "CSNOTIFY_CLOUDSTACK_URL": f"http://u:pw@127.0.0.1:{closed_port()}/api",
           "CSNOTIFY_CLOUDSTACK_API_KEY": "k", "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "s"}  # fmt: skip
    r = run_process("listen", "--source", "api", "--interval", "2", "--duration", "1", env=env)
    first = r.stderr.splitlines()[0]
    assert first.startswith("csnotify: notice: listening: source api, http://u:********@127.0.0.1:")
    assert first.endswith("/api every 2 s; 2 subscriptions (1 enabled)")
    r = run_process("-q", "listen", "--source", "stdin", input="")
    assert r.stderr == ""


# -- api ----------------------------------------------------------------------------------


def api_env(sim, secret: str = "test-secret-key") -> dict[str, str]:
    return {**KEYS, "CSNOTIFY_CLOUDSTACK_URL": sim.url, "CSNOTIFY_CLOUDSTACK_SECRET_KEY": secret}


def test_api_end_to_end_every_event_exactly_once(tmp_path: Path) -> None:
    with Receiver() as rx, simulator(tmp_path, "--count", "400", "--rate", "400/s") as sim:
        subscribe("*", "--category", "*", "--to", rx.url)
        listen = start_listen(
            "--source", "api", "--interval", "0.3", "--since", "10m", env=api_env(sim)
        )
        try:
            expected = all_arrived(sim, rx, api_ids, settle=1)
        finally:
            rc, _, err = stop(listen)
    assert rc == 0, err
    got = received_ids(rx)
    assert len(got) == len(expected) > 100
    assert set(got) == set(expected)


def test_api_restart_neither_loses_nor_repeats(tmp_path: Path) -> None:
    with Receiver() as rx, simulator(tmp_path, "--count", "600", "--rate", "200/s") as sim:
        subscribe("*", "--category", "*", "--to", rx.url)
        env = api_env(sim)
        listen = start_listen("--source", "api", "--interval", "0.2", "--since", "10m", env=env)
        assert wait_for(lambda: len(rx.requests) >= 60, 30)
        assert stop(listen)[0] == 0
        # the next run starts from the cursor in the store, not from --since or now
        listen = start_listen("--source", "api", "--interval", "0.2", env=env)
        try:
            expected = all_arrived(sim, rx, api_ids, settle=1)
        finally:
            rc, _, err = stop(listen)
    assert rc == 0, err
    got = received_ids(rx)
    assert sorted(got) == sorted(expected)


def test_api_once_and_an_idle_poll_costs_one_request(tmp_path: Path) -> None:
    with Receiver() as rx, simulator(tmp_path, "--count", "50", "--rate", "0") as sim:
        sim.wait_generated()
        subscribe("*", "--category", "*", "--to", rx.url)
        env = {**os.environ, **api_env(sim)}
        r = run_process("listen", "--source", "api", "--once", "--since", "1h", env=env)
        assert r.exit_code == 0, r.stderr
        assert len(rx.requests) == len(api_ids(sim))
        before = sim.stats()["requests"]["listEvents"]
        r = run_process("listen", "--source", "api", "--once", env=env)
        assert r.exit_code == 0
        assert sim.stats()["requests"]["listEvents"] == before + 1
        assert len(rx.requests) == len(api_ids(sim))  # nothing repeated


def test_api_first_run_starts_from_now(tmp_path: Path) -> None:
    with Receiver() as rx, simulator(tmp_path, "--count", "30", "--rate", "0") as sim:
        sim.wait_generated()
        time.sleep(1.1)
        subscribe("*", "--to", rx.url)
        r = run_process("listen", "--source", "api", "--once", env={**os.environ, **api_env(sim)})
        assert r.exit_code == 0, r.stderr
    assert rx.requests == []


def test_api_wrong_secret_is_exit_3(tmp_path: Path) -> None:
    with simulator(tmp_path, "--count", "0") as sim:
        subscribe("*", "--to", "https://hooks.example.com/x")
        env = {**os.environ, **api_env(sim, secret="not-the-secret")}
        r = run_process("listen", "--source", "api", env=env, timeout=30)
    assert r.exit_code == 3
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("csnotify: error: CloudStack refused the API key or signature (401")
    assert "check cloudstack.api_key and cloudstack.secret_key" in lines[-1]
    assert "not-the-secret" not in r.stderr


# -- stdin ------------------------------------------------------------------------------


def test_stdin_source(tmp_path: Path) -> None:
    items = load_fixture("api/listevents_response.json")["listeventsresponse"]["event"]
    text = "\n".join([json.dumps(items[0]), "{broken", json.dumps(items[1])]) + "\n"
    with Receiver() as rx:
        subscribe("*", "--category", "*", "--to", rx.url)
        r = run_process("listen", "--source", "stdin", "--print", input=text)
    assert r.exit_code == 1
    assert "rejected line 2: invalid JSON" in r.stderr
    logged = run_process("listen", "--source", "stdin", "--log-format", "json", input="{broken\n")
    start, log_line = [json.loads(line) for line in logged.stderr.splitlines()]
    assert start["level"] == "notice" and start["message"].startswith("listening: source stdin")
    assert log_line["level"] == "warning" and log_line["message"].startswith("rejected line 1")
    assert [b["event"]["id"] for b in rx.bodies()] == [items[0]["id"], items[1]["id"]]
    assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == [
        items[0]["id"],
        items[1]["id"],
    ]


def stdin_events(count: int) -> str:
    return "".join(
        json.dumps({"id": f"w{i}", "type": "VM.STOP", "created": "2026-11-25T10:00:00Z",
                    "resource_id": f"vm-{i}", "source": "stdin"}) + "\n"
        for i in range(count)
    )  # fmt: skip


def backlog() -> int:
    (ep,) = run_process("status", "--json").json()["endpoints"]
    return int(ep["backlog"])


def test_a_signal_ends_the_final_wait_for_a_backlog(tmp_path: Path) -> None:
    """At the end of input listen waits for the backlog to go out; a hanging endpoint makes
    that wait long, and SIGTERM ends it: attempts in flight finish (at most
    delivery.timeout), the rest stays pending, exit 0."""
    with Receiver(lambda _r: Answer(200, delay=6)) as rx:
        subscribe("*", "--to", rx.url)
        events = tmp_path / "events.jsonl"
        events.write_text(stdin_events(60))
        with events.open() as source:  # its end: from there listen waits for the backlog
            listen = subprocess.Popen(
                [sys.executable, "-m", "csnotify", "listen", "--source", "stdin"],
                env={**os.environ, "CSNOTIFY_DELIVERY_TIMEOUT": "2"},
                stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
        assert wait_for(lambda: backlog() == 60 and len(rx.requests) >= 16, 20)
        started = time.monotonic()
        rc, _, err = stop(listen)
        took = time.monotonic() - started
    assert rc == 0, err
    assert took < 2 + 1 + 1.5, err  # delivery.timeout + 1 s, and the interpreter's own exit
    assert backlog() == 60  # none delivered (each timed out), none lost


def test_an_endpoint_that_keeps_failing_cannot_keep_the_final_wait_going(
    cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final wait covers retries due within ONESHOT_WAIT_S of its start, not of now:
    an endpoint failing every 0.2 s does not keep listen running attempt after attempt."""
    from csnotify.delivery import pipeline

    monkeypatch.setattr(pipeline, "ONESHOT_WAIT_S", 1.0)
    with Receiver(lambda _r: Answer(500)) as rx:
        cli("subscribe", "*", "--to", rx.url, "--name", "f")
        started = time.monotonic()
        r = cli("-c", "delivery.retry_schedule=" + ",".join(["0s"] + ["0.2s"] * 40),
                "listen", "--source", "stdin", input=stdin_events(1))  # fmt: skip
        took = time.monotonic() - started
    assert r.exit_code == 0, r.stderr
    assert took < 4, took  # 41 attempts 0.2 s apart would take 8 s
    assert 3 <= len(rx.requests) <= 10
    (ep,) = cli("status", "--json").json()["endpoints"]
    assert ep["backlog"] == 1  # waits in the store for the next run


def test_a_bad_since_is_one_line_before_anything_starts() -> None:
    r = run_process("listen", "--source", "api", "--since", "1x")
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [
        "csnotify: error: unrecognised time '1x'; use e.g. 2024-05-14T10:22:31Z,"
        " 2024-05-14T10:22Z or 2024-05-14"
    ]


def test_a_second_api_listener_on_one_store_is_refused(tmp_path: Path) -> None:
    """One cursor, one poller: two API listeners on one store each polled it and every
    event went out twice (found by an operator run-through). The second is refused with
    one line, exit 1; the first goes on; once it stopped, another may start."""
    with Receiver() as rx, simulator(tmp_path, "--count", "40", "--rate", "20/s") as sim:
        subscribe("*", "--category", "*", "--to", rx.url)
        env = api_env(sim)
        first = start_listen("--source", "api", "--interval", "0.2", "--since", "10m", env=env)
        try:
            assert wait_for(lambda: len(rx.requests) >= 5, 30)
            r = run_process("listen", "--source", "api", "--once", env={**os.environ, **env})
            assert r.exit_code == 1, r.stderr
            errors = [ln for ln in r.stderr.splitlines() if ln.startswith("csnotify: error:")]
            assert len(errors) == 1, r.stderr
            assert f"another 'listen --source api' (pid {first.pid} on" in errors[0]
            dry = run_process("listen", "--source", "api", "--once", "--dry-run",
                              env={**os.environ, **env})  # fmt: skip
            assert dry.exit_code == 0, dry.stderr  # a dry run delivers nothing: allowed
            expected = all_arrived(sim, rx, api_ids, settle=1)
        finally:
            rc, _, err = stop(first)
        assert rc == 0, err
        r = run_process("listen", "--source", "api", "--once", env={**os.environ, **env})
        assert r.exit_code == 0, r.stderr
    assert sorted(received_ids(rx)) == sorted(expected)  # each once


def test_settings_the_broker_refuses_are_one_line_not_an_outage(bus) -> None:  # noqa: F811
    """An exchange or queue the broker refuses to declare (the default exchange, one of
    another type, a reserved amq. name) is a setting to fix: one line naming it, exit 2,
    with or without --once, not 'unreachable' and retries for ever."""
    cases = [({"CSNOTIFY_AMQP_EXCHANGE": "amq.direct"}, "PRECONDITION_FAILED"),
             ({"CSNOTIFY_AMQP_EXCHANGE": ""}, "ACCESS_REFUSED"),
             ({"CSNOTIFY_AMQP_QUEUE": "amq.csnotify-test"}, "reserved prefix")]  # fmt: skip
    for override, said in cases:
        for once in (["--once"], []):
            env = {**os.environ, **bus.env(), **override}
            r = run_process("listen", "--source", "amqp", *once, env=env, timeout=60)
            assert r.exit_code == 2, r.stderr
            errors = [ln for ln in r.stderr.splitlines() if ln.startswith("csnotify: error:")]
            assert len(errors) == 1 and said in errors[0], r.stderr
            assert "check amqp.exchange and amqp.queue" in errors[0]
            assert "unreachable" not in r.stderr
