"""Several listeners, one state (issue 15): two `listen --source amqp` processes, each
with its own home and config file, sharing one store (a SQLite file, a MariaDB database,
a PostgreSQL database) and one RabbitMQ queue. Everything is real: the CLI as separate
processes, the broker, the database servers, HTTP receivers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from dbservers import backend  # noqa: F401 - fixture
from helpers import Run, load_fixture, run_process
from receivers import Answer, Receiver, SmsEagleGateway
from services import bus, wait_for  # noqa: F401 - fixtures

from csnotify.store import SourceState, open_store

ACTION = load_fixture("amqp/ActionEvent.json")
VM = "c3b1f2e4-6a7d-4e89-9b0a-1f2e3d4c5b6a"


def message(n: int, resource: str | None = None) -> tuple[str, bytes]:
    """A VM.START of its own VM (``resource``: of that one), told apart by its description."""
    vm = resource or str(uuid.UUID(int=n + 1))
    body = ACTION["body_raw"].replace(VM, vm).replace("Vm Id: 42", f"Vm Id: {n}")
    return ACTION["routing_key"].replace(VM, vm), body.encode()


def vm_number(request_body: dict) -> int:
    return int(request_body["event"]["description"].rsplit(" ", 1)[1])


class Host:
    """One listener's machine: its own home, config file and log; the shared store."""

    def __init__(self, root: Path, name: str, db: str, bus_env: dict[str, str]) -> None:
        base = root / name
        (base / "home").mkdir(parents=True)
        self.log = base / "listen.log"
        self.env = {
            **os.environ, **bus_env, "HOME": str(base / "home"),
            "XDG_CONFIG_HOME": str(base / "home" / ".config"),
            "XDG_DATA_HOME": str(base / "home" / ".local" / "share"),
            "CSNOTIFY_CONFIG": str(base / "config.toml"), "CSNOTIFY_DB": db,
        }  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> Run:
        r = run_process(*args, env=self.env)
        assert r.exit_code == 0, r.stderr
        return r

    def configure(self, **settings: str) -> None:
        for key, value in settings.items():
            self.cli("config", "set", key.replace("__", "."), value)

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "csnotify", "-v", "listen", "--source", "amqp"],
                env=self.env, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def reloads(self) -> int:
        return self.log.read_text().count("subscriptions changed")

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def consumers(queue: str, url: str) -> int:
    async def count() -> int:
        import aio_pika

        conn = await aio_pika.connect(url)
        async with conn:
            channel = await conn.channel()
            try:
                declared = await channel.declare_queue(queue, durable=True, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return 0
            return int(declared.declaration_result.consumer_count)

    return asyncio.run(count())


@pytest.fixture
def hosts(tmp_path: Path, backend: str, bus):  # noqa: F811
    """Two hosts on one store and one queue; started by the test, stopped here."""
    pair = [Host(tmp_path, name, backend, bus.env()) for name in ("a", "b")]
    yield pair
    for host in pair:
        if host.proc is not None and host.proc.poll() is None:
            host.proc.kill()
            host.proc.wait()


def start_both(hosts: list[Host], bus) -> None:  # noqa: F811
    for host in hosts:
        host.start()
    assert wait_for(lambda: consumers(bus.queue, bus.url) == 2, 30), "both listeners consume"


def stop_both(hosts: list[Host]) -> None:
    for host in hosts:
        assert host.stop() == 0, host.log.read_text()[-2000:]


def listeners_of(host: Host) -> dict[int, dict]:
    return {lst["pid"]: lst for lst in host.cli("status", "--json").json()["listeners"]}


def test_every_event_is_delivered_once_and_seen_from_both_homes(hosts, bus) -> None:  # noqa: F811
    a, b = hosts
    events = 100  # log.max_per_endpoint keeps them all
    with Receiver() as rx:
        a.cli("subscribe", "VM.*", "--to", rx.url, "--name", "vms")
        start_both(hosts, bus)
        bus.publish_many([message(n) for n in range(events)])
        assert wait_for(lambda: len(rx.requests) >= events, 60)
        assert wait_for(lambda: bus.queued() == 0, 10)
        # every listener, from either home: host, pid, heartbeat, events handled
        seen = listeners_of(b)
        assert set(seen) == {a.pid, b.pid}
        assert all(lst["state"] == "running" and lst["host"] for lst in seen.values())
        assert all(lst["source"] == "amqp" and lst["updated"] for lst in seen.values())
        text = b.cli("status").stdout  # every listener, named by host and pid
        assert all(f"listener amqp on {lst['host']} pid {pid}: running" in text
                   for pid, lst in seen.items())  # fmt: skip
        stop_both(hosts)
    got = Counter(vm_number(r.json()) for r in rx.requests)
    assert got == Counter(range(events))  # each once
    by_listener = listeners_of(a)
    assert all(lst["events"] > 0 for lst in by_listener.values())  # both took part
    assert sum(lst["events"] for lst in by_listener.values()) == events
    # the delivery log holds both hosts' deliveries, seen through either home
    log = b.cli("deliveries", "--limit", str(events * 2), "--json").json()
    assert len(log) == events
    assert {row["listener"].rsplit(":", 1)[1] for row in log} == {str(a.pid), str(b.pid)}


def test_a_mute_set_through_one_home_holds_on_both(hosts, bus) -> None:  # noqa: F811
    a, b = hosts
    with Receiver() as rx:
        a.cli("subscribe", "VM.*", "--to", rx.url, "--name", "vms")
        start_both(hosts, bus)
        before = [h.reloads() for h in hosts]
        b.cli("mute", "vms", "--for", "1h", "--reason", "maintenance")
        # both listeners take the change, without a restart
        assert wait_for(
            lambda: all(h.reloads() > n for h, n in zip(hosts, before, strict=True)), 10
        )
        bus.publish_many([message(n) for n in range(20)])

        def muted() -> list[dict]:
            return [r for r in a.cli("deliveries", "--json").json() if r["status"] == "muted"]

        assert wait_for(lambda: len(muted()) == 20, 30)
        stop_both(hosts)
        assert rx.requests == []
    assert {row["listener"].rsplit(":", 1)[1] for row in muted()} == {str(a.pid), str(b.pid)}


def test_failures_are_counted_once_for_all_listeners(hosts, bus) -> None:  # noqa: F811
    """failures.disable_after 4: two failures through each listener switch the endpoint
    off (counted per listener, neither would have); it is off for both, and
    failures.notify is told once."""
    a, b = hosts
    down = {"yes": True}
    with Receiver(lambda _r: Answer(500) if down["yes"] else Answer()) as bad, Receiver() as admin:
        for host in hosts:
            host.configure(failures__disable_after="4", failures__notify=admin.url,
                           delivery__retry_schedule="0s", delivery__per_endpoint="1")  # fmt: skip
        a.cli("subscribe", "VM.*", "--to", bad.url, "--name", "vms")
        start_both(hosts, bus)
        before = [h.reloads() for h in hosts]
        bus.publish_many([message(n) for n in range(4)])

        def enabled(host: Host) -> bool:
            return host.cli("show", "vms", "--json").json()["endpoints"][0]["enabled"]

        assert wait_for(lambda: not enabled(a), 30), "switched off after 4 failures in all"
        assert not enabled(b)
        assert wait_for(
            lambda: all(h.reloads() > n for h, n in zip(hosts, before, strict=True)), 10
        )
        bus.publish_many([message(n) for n in range(4, 8)])  # to neither listener's endpoint
        assert wait_for(lambda: bus.queued() == 0, 10)
        assert wait_for(lambda: sum(x["events"] for x in listeners_of(a).values()) == 8, 10)
        stop_both(hosts)
        assert len(bad.requests) == 4
        assert len(admin.requests) == 1
        assert "4 consecutive failed deliveries" in admin.requests[0].json()["event"]["description"]
        failed = [r for r in a.cli("deliveries", "--json").json() if r["status"] == "failed"]
        assert len(failed) == 4
        assert {r["listener"].rsplit(":", 1)[1] for r in failed} == {str(a.pid), str(b.pid)}
        (ep,) = b.cli("show", "vms", "--json").json()["endpoints"]
        assert ep["consecutive_failures"] == 4 and "4 consecutive failed" in ep["disabled_reason"]
        assert "switched off" in b.cli("status").stdout
        # redeliver through one home sends what both listeners failed to deliver
        down["yes"] = False
        b.cli("enable", "vms", "--endpoint", bad.url)
        report = a.cli("redeliver", "vms", "--failed", "--since", "1h", "--json").json()
        assert (report["in_log"], report["delivered"]) == (4, 4), report
        assert sorted(vm_number(r.json()) for r in bad.requests[4:]) == [0, 1, 2, 3]


def test_one_resources_events_keep_their_order_across_listeners(hosts, bus) -> None:  # noqa: F811
    """The first event of a VM fails once and waits 4 s for its retry in one listener; the
    VM's later events, half of them taken off the queue by the other listener, wait behind
    it: the receiver gets them all in the order they were accepted, none before the first
    one's retry."""
    a = hosts[0]
    vm = str(uuid.UUID(int=4242))
    failed_once: list[int] = []

    def script(req) -> Answer:
        if vm_number(req.json()) == 0 and not failed_once:
            failed_once.append(0)
            return Answer(500)
        return Answer()

    with Receiver(script) as rx:
        for host in hosts:
            host.configure(delivery__retry_schedule="0s,4s")
        a.cli("subscribe", "VM.*", "--to", rx.url, "--name", "vms")
        start_both(hosts, bus)
        bus.publish_many([message(0, vm)])
        assert wait_for(lambda: len(rx.requests) == 1, 10), "the first attempt fails"
        for n in range(1, 9):  # apart enough that the store accepts them in this order
            bus.publish_many([message(n, vm)])
            time.sleep(0.25)
        assert wait_for(lambda: len(rx.requests) == 10, 30), [r.json() for r in rx.requests]
        assert wait_for(lambda: bus.queued() == 0, 10)
        counts = [listeners_of(a)[h.pid]["events"] for h in hosts]
        stop_both(hosts)
    assert min(counts) >= 2, f"each listener took some of the VM's events: {counts}"
    assert [vm_number(r.json()) for r in rx.requests] == [0, *range(9)]


def test_a_killed_listeners_claimed_deliveries_are_finished_by_the_other(
    hosts,
    bus,  # noqa: F811
    backend: str,  # noqa: F811
) -> None:
    """SIGKILL one listener while it holds claimed deliveries to a slow endpoint: the other
    takes them over and every event arrives."""
    a, b = hosts
    events = 40
    with Receiver(lambda _r: Answer(delay=0.3)) as rx:
        a.cli("subscribe", "VM.*", "--to", rx.url, "--name", "vms")
        for host in hosts:
            host.configure(delivery__per_endpoint="2", amqp__prefetch="10")
        start_both(hosts, bus)
        bus.publish_many([message(n) for n in range(events)])
        store = open_store(backend, {})
        try:

            def claimed_by_a() -> int:
                return store.conn.execute(
                    "SELECT count(*) FROM pending WHERE owner LIKE ?", (f"%:{a.pid}:%",)
                ).fetchone()[0]

            assert wait_for(lambda: claimed_by_a() > 0 and len(rx.requests) >= 4, 30)
            assert a.proc is not None
            a.proc.kill()
            a.proc.wait()
            assert claimed_by_a() > 0  # left behind, claimed
            got = lambda: {vm_number(r.json()) for r in rx.requests}  # noqa: E731
            assert wait_for(lambda: got() == set(range(events)), 90), sorted(
                set(range(events)) - got()
            )
            assert wait_for(
                lambda: store.conn.execute("SELECT count(*) FROM pending").fetchone()[0] == 0, 10
            )
        finally:
            store.close()
        assert b.stop() == 0
    # only what was in flight at the kill may come twice: deliveries running or ended
    # but not committed (2 x delivery.per_endpoint), and messages the store marked
    # acknowledged whose acknowledgement the broker had not processed (amqp.prefetch)
    assert len(rx.requests) - events <= 2 * 2 + 10


def test_each_listeners_group_for_one_endpoint_is_sent_even_if_one_is_killed(
    hosts,
    bus,  # noqa: F811
) -> None:
    """Both listeners fold their share of 6 events into a group for one SMS endpoint
    (--group-wait 8s); one is SIGKILLed before its group is due. The other sends its own
    group and takes over the killed one's: all 6 events are in the texts sent."""
    a, b = hosts
    with SmsEagleGateway() as sms:
        a.cli("subscribe", "VM.*", "--to", sms.uri(), "--group-wait", "8s", "--name", "sms")
        start_both(hosts, bus)
        bus.publish_many([message(n) for n in range(6)])

        def folded() -> int:
            return a.cli("show", "sms", "--json").json()["endpoints"][0]["total_folded"]

        assert wait_for(lambda: folded() == 6, 20)
        by = {x["pid"]: x["events"] for x in listeners_of(a).values()}
        assert by.get(a.pid) and by.get(b.pid), f"both listeners took events: {by}"
        assert a.proc is not None
        a.proc.kill()
        a.proc.wait()

        def sent() -> int:
            return sum(int(text.split(" ", 1)[0]) for text in sms.texts())

        assert wait_for(lambda: sent() == 6, 40), sms.texts()
        assert b.stop() == 0
    assert all(re.fullmatch(r"\d events?: \d VM\.START", t) for t in sms.texts()), sms.texts()


def test_a_rate_limit_holds_across_both_listeners(hosts, bus) -> None:  # noqa: F811
    """--max-per-minute 5 on an endpoint both listeners send to: 5 messages in all go out
    in the minute, the rest wait in a digest (counted folded), whichever listener took
    them."""
    a, b = hosts
    events = 12
    with Receiver() as rx:
        a.cli("subscribe", "VM.*", "--to", rx.url, "--name", "vms", "--max-per-minute", "5")
        start_both(hosts, bus)
        bus.publish_many([message(n) for n in range(events)])

        def outcomes() -> Counter[str]:
            return Counter(r["status"] for r in b.cli("deliveries", "--json").json())

        assert wait_for(lambda: sum(outcomes().values()) == events, 30)
        # both took part (their counts are saved every half second: wait for them)
        assert wait_for(lambda: all(x["events"] > 0 for x in listeners_of(a).values()), 10)
        stop_both(hosts)
    assert outcomes() == {"delivered": 5, "folded": events - 5}
    assert len(rx.requests) == 5


def test_claims_of_a_listener_on_another_host_are_taken_when_their_lease_ends(
    cli,
    backend: str,  # noqa: F811
) -> None:
    """A listener on another machine died holding claims: once their lease has run out,
    a listener here delivers them; a claim whose lease still runs is left alone."""
    from csnotify.delivery.outbox import Changes, Outbox, PendingRow
    from csnotify.events import from_normalised

    with Receiver() as rx:
        assert cli("subscribe", "VM.*", "--to", rx.url, "--name", "vms").exit_code == 0
        store = open_store(backend, {})
        try:
            (endpoint_id,) = [ep.id for ep in store.subscription("vms").endpoints]
            rows = [
                PendingRow(endpoint_id, from_normalised({"id": f"ev-{i}", "type": "VM.START"}),
                           f"vm-{i}", time.time(), claimed=False)
                for i in range(3)
            ]  # fmt: skip
            Outbox(store, 100).commit(Changes(new=rows))
            with store.transaction():
                for row, lease in zip(rows, (1.0, 2.0, 4e9), strict=True):  # ended, ended, runs
                    store.conn.execute(
                        "UPDATE pending SET owner = ?, lease = ? WHERE id = ?",
                        ("elsewhere.example:4242:dead", lease, row.id),
                    )
        finally:
            store.close()
        r = run_process("listen", "--source", "stdin", input="")
        assert r.exit_code == 0, r.stderr
    assert sorted(req.json()["event"]["id"] for req in rx.requests) == ["ev-0", "ev-1"]


HOLDER = """
import os, sys, time
from csnotify.delivery.outbox import Changes, Outbox, PendingRow
from csnotify.events import from_normalised
from csnotify.store import open_store
store = open_store(sys.argv[1], {})
rows = [PendingRow(int(sys.argv[2]), from_normalised({"id": f"ev-{i}", "type": "VM.START"}),
                   f"vm-{i}", time.time()) for i in range(3)]
Outbox(store, 100).commit(Changes(new=rows))  # written claimed by this process
print("holding", os.getpid(), flush=True)
time.sleep(120)
"""


def test_claims_of_a_process_in_another_pid_namespace_are_left_to_their_lease(
    cli,
    backend: str,  # noqa: F811
) -> None:
    """Containers sharing this host's name (host networking) each have their own pid
    namespace: a process in another one that holds claims, under a pid that does not
    exist here, runs all the same. A listener here leaves its claims alone (they go back
    when their lease ends), and status does not call it stopped."""
    from csnotify.processes import alive

    pid = next(p for p in range(32000, 20000, -1) if not alive(p))  # free here
    with Receiver() as rx:
        cli("subscribe", "VM.*", "--to", rx.url, "--name", "vms")
        store = open_store(backend, {})
        try:
            (endpoint_id,) = [e.id for e in store.subscription("vms").endpoints]
        finally:
            store.close()
        spawn = f'echo {pid - 1} > /proc/sys/kernel/ns_last_pid; "$0" -c "$1" "$2" "$3" & wait $!'
        holder = subprocess.Popen(
            ["unshare", "--pid", "--kill-child", "--map-root-user", "--mount-proc",
             "sh", "-c", spawn, sys.executable, HOLDER, backend, str(endpoint_id)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert holder.stdout is not None
            line = holder.stdout.readline().strip()
            assert line == f"holding {pid}", f"no process in a new pid namespace: {line!r}"
            r = run_process("listen", "--source", "stdin", input="")
            assert r.exit_code == 0, r.stderr
            assert rx.requests == []
            assert "took over" not in r.stderr
        finally:
            holder.kill()
            holder.wait()
    # a listener that runs in another pid namespace on this host: running, not stopped
    from csnotify.clock import now_iso

    doc = {"host": socket.gethostname(), "pid": pid, "pidns": "1", "running": True,
           "started": now_iso(), "heartbeat_s": 5.0, "events": 0}  # fmt: skip
    store = open_store(backend, {})
    try:
        SourceState(store).save_listener(f"{socket.gethostname()}:{pid}:1.x", "amqp", doc)
    finally:
        store.close()
    states = {x["pid"]: x["state"] for x in cli("status", "--json").json()["listeners"]}
    assert states[pid] == "running"


def test_a_pending_batch_is_sent_by_its_listener_or_once_it_is_gone(cli, backend: str) -> None:  # noqa: F811
    """Digests and groups are held by the listener that opened them, each its own even for
    one endpoint: a listener starting sends those of listeners that are gone (here: two on
    another host, silent for a minute, and an earlier run's), merged into one message per
    endpoint, not those of one that runs (its heartbeat is fresh)."""
    from csnotify.clock import log_now
    from csnotify.events import from_normalised
    from csnotify.pacing import Batch
    from csnotify.store import PendingBatches

    minute_ago = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - 60))
    with Receiver() as rx:
        r = cli("subscribe", "VM.*", "--to", rx.url + "/live", "--to", rx.url + "/gone",
                "--name", "vms")  # fmt: skip
        assert r.exit_code == 0, r.stderr
        store = open_store(backend, {})
        try:
            eps = {ep.uri.rsplit("/", 1)[1]: ep.id for ep in store.subscription("vms").endpoints}
            batches = PendingBatches(store)
            holders = [("live", "live", log_now()), ("gone", "gone", minute_ago),
                       ("gone2", "gone", minute_ago), ("", "gone", None)]  # fmt: skip
            for name, endpoint, beat in holders:
                owner = f"elsewhere.example:{len(name)}:{name}" if name else ""
                if beat is not None:
                    state = SourceState(store)
                    doc = {"host": "elsewhere.example", "pid": len(name), "running": True,
                           "started": minute_ago}  # fmt: skip
                    state.save_listener(owner, "amqp", doc)
                with store.transaction():
                    store.conn.execute(
                        "UPDATE listeners SET updated = ? WHERE id = ?", (beat, owner)
                    )
                    batch = Batch("group", time.time() - 1)
                    batch.add(
                        from_normalised({"id": f"ev-{name or 'earlier'}", "type": "VM.START"})
                    )
                    batches.write([(eps[endpoint], ("group", batch.due, batch.to_doc()))], owner)
        finally:
            store.close()
        r = run_process("listen", "--source", "stdin", input="")
        assert r.exit_code == 0, r.stderr
    (sent,) = rx.requests
    assert sent.path == "/gone"
    digest = sent.json()["event"]
    assert {e["id"] for e in digest["raw"]["events"]} == {"ev-gone", "ev-gone2", "ev-earlier"}
    store = open_store(backend, {})
    try:
        left = [(e, owner) for e, owner, *_ in PendingBatches(store).all()]
    finally:
        store.close()
    assert left == [(eps["live"], "elsewhere.example:4:live")]
