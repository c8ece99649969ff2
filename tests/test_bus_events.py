"""Issue 13: bus events as useful as API events. Real parts only: the bus messages one
successful and one failed asynchronous operation publish, all categories in CloudStack's
order (tests/fixtures/amqp/operations.jsonl, made by the simulator's generator), replayed
by `csnotify simulate` onto the real RabbitMQ; the simulator's API answers the look-ups;
`csnotify listen` as a separate process; a local webhook receiver."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import threading
import time
from pathlib import Path

from helpers import FIXTURES, run_process
from receivers import Receiver, closed_port
from services import bus, simulator  # noqa: F401 - fixtures

from csnotify.simulator.generator import ACCOUNT_UUID, USER_UUID

OPERATIONS = FIXTURES / "amqp" / "operations.jsonl"
KEYS = {
    "CSNOTIFY_CLOUDSTACK_API_KEY": "test-api-key",
    "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "test-secret-key",
}


def recorded() -> list[dict]:
    return [json.loads(line) for line in OPERATIONS.read_text().splitlines()]


def completed_start() -> dict:
    """The Completed VM.START ActionEvent of web-01, as recorded."""
    (line,) = [m for m in recorded() if '"status":"Completed"' in m["body_raw"]
               and '"event":"VM.START"' in m["body_raw"]]  # fmt: skip
    return line


def subscribe(*args: str) -> None:
    r = run_process("subscribe", *args)
    assert r.exit_code == 0, r.stderr


def listen_once(env: dict[str, str]) -> str:
    r = run_process("listen", "--source", "amqp", "--once", env={**os.environ, **env})
    assert r.exit_code == 0, r.stderr
    return r.stderr


def at(rx: Receiver, path: str) -> list[dict]:
    return [r.json()["event"] for r in rx.requests if r.path == path]


def publish_operations(tmp_path: Path, bus, env: dict[str, str]):  # noqa: F811
    """Bind the queue (a first listen), then let the simulator publish the operations."""
    listen_once(env)
    return simulator(tmp_path, "--replay", str(OPERATIONS), "--rate", "0", "--amqp", bus.url,
                     "--exchange", bus.exchange)  # fmt: skip


def test_two_operations_off_the_bus_named_typed_and_once_each(tmp_path: Path, bus) -> None:  # noqa: F811
    messages = recorded()
    with Receiver() as rx:
        subscribe("VM.*", "--name", "all", "--to", rx.url + "/all")
        subscribe("VM.*", "--name", "oncall", "--level", "ERROR", "--to", rx.url + "/oncall")
        subscribe("VM.*", "--name", "web", "--where", "account=admin",
                  "--where", "resource_name=web-01", "--to", rx.url + "/web")  # fmt: skip
        subscribe("VM.*", "--name", "byid", "--where", f"account_id={ACCOUNT_UUID}",
                  "--to", rx.url + "/byid")  # fmt: skip
        subscribe("VM.*", "--name", "jobs", "--category", "AsyncJobEvent", "--state", "complete",
                  "--to", rx.url + "/jobs")  # fmt: skip
        subscribe("VM.START", "--name", "phases", "--state", "Scheduled", "--state", "started",
                  "--to", rx.url + "/phases")  # fmt: skip
        subscribe("*", "--name", "everything", "--category", "*", "--to", rx.url + "/everything")
        subscribe("VM.*", "--name", "cs", "--format", "cloudstack", "--key", "s3cr3t",
                  "--to", rx.url + "/cs")  # fmt: skip
        with publish_operations(tmp_path, bus, bus.env()) as sim:
            assert sim.wait_generated() == len(messages) == 17
            env = {**bus.env(), **KEYS, "CSNOTIFY_CLOUDSTACK_URL": sim.url}
            listen_once(env)
            asked = sim.stats()["requests"]
    # one notification per operation: its Completed ActionEvent, named, failures at ERROR
    done = at(rx, "/all")
    assert [(e["type"], e["state"], e["level"]) for e in done] == [
        ("VM.START", "Completed", "INFO"), ("VM.STOP", "Completed", "ERROR"),
    ]  # fmt: skip
    assert [e["resource_name"] for e in done] == ["web-01", "web-02"]
    for e in done:
        assert (e["account"], e["domain"], e["username"]) == ("admin", "ROOT", "admin")
        assert (e["account_id"], e["user_id"], e["category"]) == (
            ACCOUNT_UUID, USER_UUID, "ActionEvent",
        )  # fmt: skip
    assert [e["resource_name"] for e in at(rx, "/oncall")] == ["web-02"]
    assert [e["resource_name"] for e in at(rx, "/web")] == ["web-01"]
    assert len(at(rx, "/byid")) == 2
    # async jobs by their command, state phase/status, the error text of a failure
    jobs = at(rx, "/jobs")
    assert [(e["type"], e["state"], e["level"]) for e in jobs] == [
        ("VM.START", "complete/SUCCEEDED", "INFO"), ("VM.STOP", "complete/FAILED", "ERROR"),
    ]  # fmt: skip
    assert jobs[1]["description"] == "Unable to stop web-02: host kvm-03 is down"
    assert [e["state"] for e in at(rx, "/phases")] == ["Scheduled", "Started"]
    assert len(at(rx, "/everything")) == 17  # every category, when asked for
    # --format cloudstack: the Completed ActionEvents as the bus carried them, byte for byte
    completed = [m["body_raw"] for m in messages if '"status":"Completed"' in m["body_raw"]]
    sent = [r for r in rx.requests if r.path == "/cs"]
    assert [r.body.decode() for r in sent] == completed
    for r in sent:
        assert r.headers["User-Agent"] == f"CS-Hookshot/{ACCOUNT_UUID}"
        mac = hmac.new(b"s3cr3t", r.body, hashlib.sha256).digest()
        assert r.headers["X-CS-Signature"] == base64.b64encode(mac).decode()
        assert r.headers["X-CS-Event"] in ("VM.START", "VM.STOP") and r.headers["X-CS-Event-ID"]
    # names were asked once per UUID, whatever the number of events naming them
    assert asked.get("listUsers") == 1
    assert asked.get("listVirtualMachines") == 2


def test_names_are_kept_in_the_store_and_unknown_uuids_too(tmp_path: Path, bus) -> None:  # noqa: F811
    unknown = json.loads((FIXTURES / "amqp" / "ActionEvent.json").read_text())  # a VM no API knows
    with Receiver() as rx:
        subscribe("VM.*", "--to", rx.url)
        with publish_operations(tmp_path, bus, bus.env()) as sim:
            sim.wait_generated()
            env = {**bus.env(), **KEYS, "CSNOTIFY_CLOUDSTACK_URL": sim.url}
            for second in ("31", "32"):
                body = unknown["body_raw"].replace("10:22:31", f"10:22:{second}")
                bus.publish(unknown["routing_key"], body.encode())
            shown = run_process("listen", "--source", "amqp", "--once", "--dry-run",
                                env={**os.environ, **env}).stdout  # fmt: skip
            assert "VM.START Completed web-01 (account ROOT/admin)" in shown
            message = tmp_path / "message.json"
            message.write_text(json.dumps(completed_start()))
            matched = run_process("match", "--event", str(message), env={**os.environ, **env})
            assert "event: INFO ActionEvent VM.START Completed web-01 (account ROOT/admin)" in (
                matched.stdout
            )
            before = sim.stats()["requests"]["listVirtualMachines"]  # --dry-run keeps none
            listen_once(env)
            asked = sim.stats()["requests"]["listVirtualMachines"] - before
        assert asked == 3  # web-01, web-02, and the unknown one once
        # another run with the API gone: every name comes from the store, nothing is asked
        bus.publish_many([(m["routing_key"], m["body_raw"].encode()) for m in recorded()])
        gone = f"http://127.0.0.1:{closed_port()}/client/api"
        err = listen_once({**bus.env(), **KEYS, "CSNOTIFY_CLOUDSTACK_URL": gone})
    assert "names cannot be resolved" not in err
    names = [r.json()["event"]["resource_name"] for r in rx.requests]
    assert names == ["web-01", "web-02", None, None, "web-01", "web-02"]


def test_kept_names_are_asked_again_after_their_ttl_unknown_ones_after_a_tenth(
    tmp_path: Path,
    bus,  # noqa: F811
) -> None:
    """cloudstack.names_ttl (1h here) on the real store: a name read longer ago than that is
    asked again, a UUID the API did not know longer ago than a tenth of it too; a younger
    answer is used as it is. The store's rows are aged, not the test's clock."""
    import sqlite3

    unknown = json.loads((FIXTURES / "amqp" / "ActionEvent.json").read_text())
    unknown_vm = unknown["routing_key"].rsplit(".", 1)[1]
    web01 = completed_start()["routing_key"].rsplit(".", 1)[1]
    messages = [(m["routing_key"], m["body_raw"].encode()) for m in recorded()]
    messages.append((unknown["routing_key"], unknown["body_raw"].encode()))
    with Receiver() as rx:
        subscribe("VM.*", "--to", rx.url)
        with publish_operations(tmp_path, bus, bus.env()) as sim:
            sim.wait_generated()
            env = {**bus.env(), **KEYS, "CSNOTIFY_CLOUDSTACK_URL": sim.url}
            bus.publish(*messages[-1])
            listen_once(env)
            first = sim.stats()["requests"]["listVirtualMachines"]
            db = sqlite3.connect(os.environ["CSNOTIFY_DB"])
            with db:
                rows = dict(db.execute("SELECT uuid, doc FROM names WHERE kind = 'VirtualMachine'"))
                assert rows[unknown_vm] is None and json.loads(rows[web01])["name"] == "web-01"
                for uuid, age in ((unknown_vm, 361), (web01, 3601)):
                    db.execute("UPDATE names SET fetched = fetched - ? WHERE uuid = ?", (age, uuid))
            db.close()
            bus.publish_many(messages)
            listen_once(env)
            again = sim.stats()["requests"]["listVirtualMachines"] - first
            bus.publish_many(messages)
            listen_once(env)
            third = sim.stats()["requests"]["listVirtualMachines"] - first - again
    assert first == 3  # web-01, web-02, the unknown one
    assert again == 2  # web-01 (older than 1h) and the unknown one (older than 6 min)
    assert third == 0  # all answered within their time
    # each run sends its three events, each named as its VM is (order holds per VM only)
    sent = [(r.json()["event"]["resource_id"], r.json()["event"]["resource_name"])
            for r in rx.requests]  # fmt: skip
    runs = [sorted(sent[i : i + 3], key=str) for i in (0, 3, 6)]
    assert len(sent) == 9 and runs[0] == runs[1] == runs[2]
    assert sorted(str(name) for _vm, name in runs[0]) == ["None", "web-01", "web-02"]
    assert (web01, "web-01") in runs[0] and (unknown_vm, None) in runs[0]


def test_a_projects_events_are_named_as_listevents_names_them(tmp_path: Path, bus) -> None:  # noqa: F811
    """A project's ActionEvent names the project's own account (ActionEventUtils.
    getOwnerAccountId), which listAccounts never lists; listEvents names such an event by
    its project and the project's domain, with no account (ViewResponseHelper.
    populateOwner). Off the bus with keys it reads the same: project and domain from
    listProjects, the acting user's username, and not the acting user's account."""
    from csnotify.events import as_hashmap, gson_dumps
    from csnotify.simulator.server import PROJECT, TENANTS

    project_id, project_account, project_name = PROJECT
    acme_user = next(t[0] for t in TENANTS if t[2] == "acme")
    line = completed_start()
    body = {**json.loads(line["body_raw"]), "project": project_id, "account": project_account,
            "user": acme_user}  # fmt: skip
    with Receiver() as rx:
        subscribe("VM.*", "--name", "proj", "--where", f"project={project_name}",
                  "--to", rx.url + "/proj")  # fmt: skip
        subscribe("VM.*", "--name", "acme", "--where", "account=acme", "--to", rx.url + "/acme")
        with publish_operations(tmp_path, bus, bus.env()) as sim:
            sim.wait_generated()
            bus.publish(line["routing_key"], gson_dumps(as_hashmap(body)).encode())
            env = {**bus.env(), **KEYS, "CSNOTIFY_CLOUDSTACK_URL": sim.url}
            listen_once(env)
            asked = sim.stats()["requests"]
    (event,) = at(rx, "/proj")
    assert (event["project"], event["project_id"]) == (project_name, project_id)
    assert (event["username"], event["user_id"]) == ("acme", acme_user)
    assert (event["account"], event["account_id"]) == (None, project_account)
    assert (event["domain"], event["resource_name"]) == ("customers", "web-01")
    assert at(rx, "/acme") == []  # acme acted, but the VM is the project's
    assert asked.get("listProjects") == 1
    assert (
        asked.get("listAccounts") == 1
    )  # the admin account of the usage events, not the project's


class BlackHole:
    """An API address that accepts connections and never answers (a hung server). It
    counts the connections open at once (one per look-up in flight: nothing is answered,
    so none is reused) and notes when the client gave up on each (unix time)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        self.lock = threading.Lock()
        self.open_now = self.most_open = 0
        self.given_up: list[float] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with self.lock:
                self.held.append(conn)
                self.open_now += 1
                self.most_open = max(self.most_open, self.open_now)
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
        with self.lock:
            self.open_now -= 1
            self.given_up.append(time.time())

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/client/api"

    def close(self) -> None:
        self.server.close()
        for conn in self.held:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


def test_with_the_api_down_or_hung_events_go_out_unenriched(tmp_path: Path, bus) -> None:  # noqa: F811
    hole = BlackHole()
    try:
        messages = [(m["routing_key"], m["body_raw"].encode()) for m in recorded()]
        with Receiver() as rx:
            subscribe("VM.*", "--to", rx.url)
            listen_once(bus.env())
            bus.publish_many(messages)
            # refused: one warning, then no look-up is tried while it stays down
            refused = {**bus.env(), **KEYS,
                       "CSNOTIFY_CLOUDSTACK_URL": f"http://127.0.0.1:{closed_port()}/client/api"}  # fmt: skip
            err = listen_once(refused)
            assert err.count("names cannot be resolved") == 1
            assert len(rx.requests) == 2
            first = [r.json()["event"] for r in rx.requests]
            assert [e["resource_name"] for e in first] == [None, None]
            assert [e["account_id"] for e in first] == [ACCOUNT_UUID] * 2
            assert [e["level"] for e in first] == ["INFO", "ERROR"]
            # hung: each event waits at most cloudstack.lookup_timeout, later ones not at
            # all for a look-up already overdue; 17 events would otherwise take minutes
            bus.publish_many(messages)
            hung = {**bus.env(), **KEYS, "CSNOTIFY_CLOUDSTACK_LOOKUP_TIMEOUT": "0.2",
                    "CSNOTIFY_CLOUDSTACK_URL": hole.url()}  # fmt: skip
            r = run_process("listen", "--source", "amqp", "--once", env={**os.environ, **hung},
                            timeout=30)  # fmt: skip
            assert r.exit_code == 0, r.stderr
            assert len(rx.requests) == 4
            assert [r.json()["event"]["resource_name"] for r in rx.requests[2:]] == [None, None]
    finally:
        hole.close()


def completed_for_vms(count: int) -> list[tuple[str, bytes]]:
    """The Completed VM.START as CloudStack publishes it, for ``count`` other VMs (one user)."""
    line = completed_start()
    vm = line["routing_key"].rsplit(".", 1)[1]
    out = []
    for n in range(count):
        other = f"{vm[:-12]}{n:012d}"
        out.append((line["routing_key"].replace(vm, other),
                    line["body_raw"].replace(vm, other).encode()))  # fmt: skip
    return out


def test_a_hung_api_holds_no_event_past_the_lookup_timeout_and_few_lookups_at_once(
    tmp_path: Path,
    bus,  # noqa: F811
) -> None:
    """Issue 13 point 1 on a hung API (accepts, never answers): every event is delivered
    while its look-ups still hang, so what let it go was cloudstack.lookup_timeout, not
    the HTTP client giving up (it waits 5 s); and however many UUIDs the events name, no
    more than cloudstack.lookups_in_flight look-ups are open at once."""
    hole = BlackHole()
    try:
        messages = completed_for_vms(6)  # the user and 6 VMs: 7 UUIDs to look up
        with Receiver() as rx:
            subscribe("VM.*", "--to", rx.url)
            listen_once(bus.env())
            bus.publish_many(messages)
            env = {**bus.env(), **KEYS, "CSNOTIFY_CLOUDSTACK_URL": hole.url(),
                   "CSNOTIFY_CLOUDSTACK_LOOKUP_TIMEOUT": "0.3",
                   "CSNOTIFY_CLOUDSTACK_LOOKUPS_IN_FLIGHT": "2"}  # fmt: skip
            listen_once(env)
            delivered = list(rx.requests)
        assert len(delivered) == 6
        assert {r.json()["event"]["resource_name"] for r in delivered} == {None}
        assert hole.most_open == 2  # asked (the API was tried), never more than 2 at once
        assert hole.given_up, "listen ended with look-ups still open"
        assert max(r.at for r in delivered) < min(hole.given_up)
    finally:
        hole.close()


def test_listen_says_once_that_name_filters_need_api_keys_on_the_bus(bus) -> None:  # noqa: F811
    """Issue 13 point 1: listen on the bus without API keys says it once, at start, naming
    the subscriptions whose --where tests names; with keys, or without such a filter, not."""
    hint = "match them only with API keys to resolve names"
    subscribe("VM.*", "--name", "ids", "--where", f"account_id={ACCOUNT_UUID}",
              "--to", "https://h.example/a")  # fmt: skip
    assert hint not in listen_once(bus.env())
    subscribe("VM.*", "--name", "web", "--where", "account=web", "--to", "https://h.example/b")
    subscribe("VM.*", "--name", "db", "--where", "resource_name~^db-", "--to",
              "https://h.example/c")  # fmt: skip
    bus.publish_many([(m["routing_key"], m["body_raw"].encode()) for m in recorded()])
    err = listen_once(bus.env())
    assert err.count(hint) == 1, err
    (line,) = [x for x in err.splitlines() if hint in x]
    assert "web, db" in line or "db, web" in line
    assert "ids" not in line.split("filters of", 1)[1]
    keys = {
        **bus.env(),
        **KEYS,
        "CSNOTIFY_CLOUDSTACK_URL": f"http://127.0.0.1:{closed_port()}/client/api",
    }
    assert hint not in listen_once(keys)


def test_genuine_twins_stay_two_even_when_redelivered(tmp_path: Path, bus) -> None:  # noqa: F811
    """A volume's pre- and post-transition messages are byte-identical (VolumeStateListener
    adds no status): two events, two ids, also when the broker redelivers both."""
    twin = (
        "management-server.ResourceStateEvent.OperationSucceeded.Volume."
        "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9",
        b'{"eventDateTime":"2024-05-14 10:22:31 +0000","old-state":"Allocated",'
        b'"resource":"Volume","id":"0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9",'
        b'"new-state":"Ready"}',
    )
    with Receiver() as rx:
        subscribe("*", "--category", "ResourceStateEvent", "--key", "k", "--to", rx.url)
        listen_once(bus.env())
        bus.publish(*twin)
        bus.publish(*twin)
        listen_once(bus.env())
        assert len(rx.requests) == 2
        # again, but a consumer takes both and goes away without acknowledging them: the
        # broker redelivers them, flagged, to the listener
        bus.publish(*twin)
        bus.publish(*twin)
        assert take_without_ack(bus, 2) == 2
        listen_once(bus.env())
    ids = [r.json()["event"]["id"] for r in rx.requests]
    assert len(ids) == len(set(ids)) == 4
    assert len({r.headers["webhook-id"] for r in rx.requests}) == 4
    assert bus.queued() == 0


def take_without_ack(bus, count: int) -> int:  # noqa: F811
    async def take() -> int:
        import aio_pika

        conn = await aio_pika.connect(bus.url)
        taken = 0
        async with conn:
            channel = await conn.channel()
            queue = await channel.declare_queue(bus.queue, durable=True, passive=True)
            for _ in range(count):
                if await queue.get(no_ack=False, fail=False) is not None:
                    taken += 1
        return taken  # the connection closes: both go back, flagged redelivered

    return asyncio.run(take())


def test_a_redelivery_is_told_from_a_twin_by_what_the_store_shows(tmp_path: Path) -> None:
    """The rule sources/amqp.py applies, on a real store: a redelivered message repeats the
    oldest accepted message of its content that the store does not show acknowledged."""
    from csnotify.sources.amqp import Occurrences
    from csnotify.store import SourceState, Store

    store = Store.open(tmp_path / "s.db")
    state = SourceState(store)
    ids = Occurrences()
    first, second = ids.fresh("content"), ids.fresh("content")
    assert first != second != Occurrences().fresh("content")  # twins; another listener's
    with store.transaction():
        state.remember([(first, "content"), (second, "content")])
        state.mark_acknowledged([first])
    assert state.accepted("content") == [second]
    after_restart = Occurrences()
    assert after_restart.redelivery_of(state.accepted("content")) == second  # skipped
    assert after_restart.redelivery_of(state.accepted("content")) is None  # another copy: new
    third = after_restart.fresh("content")
    with store.transaction():
        state.remember([(third, "content")])
    # accepted on this connection: the broker cannot be redelivering it here
    assert after_restart.redelivery_of(state.accepted("content")) is None


# -- without services ---------------------------------------------------------------------


def test_category_and_state_are_checked_against_cloudstacks_names(cli) -> None:
    for args, message in (
        (("--state", "Schedled"), "unknown --state 'Schedled'; did you mean 'Scheduled'"),
        (("--category", "usage"), "unknown --category 'usage'; did you mean 'UsageEvent'?"),
        (("--category", "Nonsense"), "unknown --category 'Nonsense'; CloudStack's are"),
    ):
        r = cli("subscribe", "VM.*", "--to", "https://h.example/x", *args, expect=2)
        assert r.exit_code == 2
        assert r.stderr.count("\n") == 1 and message in r.stderr
    assert cli("list", "--json").json() == []  # nothing written
    r = cli("subscribe", "VM.*", "--to", "https://h.example/x", "--name", "s",
            "--category", "asyncjobevent", "--state", "FAILED")  # fmt: skip
    assert r.exit_code == 0
    shown = cli("show", "s", "--json").json()
    assert (shown["categories"], shown["states"]) == (["AsyncJobEvent"], ["FAILED"])
    r = cli("update", "s", "--state", "nope", expect=2)
    assert r.exit_code == 2 and cli("show", "s", "--json").json()["states"] == ["FAILED"]
    cli("update", "s", "--outcomes")
    shown = cli("show", "s", "--json").json()
    assert (shown["categories"], shown["states"]) == ([], [])


def test_subscribe_says_what_cannot_work_on_the_bus(cli) -> None:
    r = cli("subscribe", "VM.*", "--to", "https://h.example/x", "--where", "account=web")
    assert r.exit_code == 0
    assert "bus events (--source amqp) carry UUIDs" in r.stderr
    r = cli("subscribe", "*", "--to", "https://h.example/y", "--format", "cloudstack",
            "--category", "UsageEvent")  # fmt: skip
    assert r.exit_code == 0 and "only ActionEvents are sent to it" in r.stderr
    keys = {"CSNOTIFY_CLOUDSTACK_API_KEY": "k", "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "s"}
    r = cli("subscribe", "VM.*", "--to", "https://h.example/z", "--where", "account=web",
            env=keys)  # fmt: skip
    assert r.exit_code == 0 and "carry UUIDs" not in r.stderr


def test_a_create_that_failed_is_its_operations_outcome_on_every_source(
    cli, tmp_path: Path
) -> None:
    """A create phase that fails publishes only a Created ActionEvent at ERROR, "Error while
    creating entity for ..." (ActionEventInterceptor.interceptException); no Scheduled or
    Completed follows. By default that is the operation's outcome, off the bus and from
    listEvents; the Created event of a create that succeeded is not."""
    from csnotify.events import as_hashmap, gson_dumps

    def bus_line(status: str, description: str, vm: str | None) -> str:
        body = {"eventDateTime": "2024-05-14 10:22:31 +0000", "event": "VM.CREATE",
                "status": status, "description": description, "user": USER_UUID,
                "account": ACCOUNT_UUID, "entity": "VirtualMachine", "entityuuid": vm}  # fmt: skip
        key = f"management-server.ActionEvent.VM-CREATE.VirtualMachine.{vm or '*'}"
        return json.dumps({"routing_key": key, "body_raw": gson_dumps(as_hashmap(body))})

    vm = "6c1d8f00-0000-4c00-8000-00000000e001"
    off_bus = [
        bus_line("Created", "Error while creating entity for deploying Vm", None),
        bus_line("Created", "Successfully created entity for deploying Vm", vm),
        bus_line("Scheduled", "deploying Vm", vm),
        bus_line("Completed", "Successfully completed deploying Vm", vm),
    ]
    phases = (
        ("Created", "ERROR", "Error while creating entity for deploying Vm"),
        ("Created", "INFO", "Successfully created entity for deploying Vm"),
        ("Completed", "INFO", "Successfully completed deploying Vm"),
    )
    listed = [
        json.dumps(
            {
                "id": f"e-{n}",
                "type": "VM.CREATE",
                "state": state,
                "level": level,
                "description": text,
                "account": "admin",
                "domain": "ROOT",
                "created": "2024-05-14T10:22:31+0000",
            }
        )
        for n, (state, level, text) in enumerate(phases)
    ]
    with Receiver() as rx:
        cli("subscribe", "VM.*", "--name", "all", "--to", rx.url + "/all")
        cli("subscribe", "VM.*", "--name", "oncall", "--level", "ERROR", "--to", rx.url + "/oncall")
        for source, lines in (("bus", off_bus), ("api", listed)):
            r = cli("listen", "--source", "stdin", input="\n".join(lines) + "\n")
            assert r.exit_code == 0, (source, r.stderr)
    got = [(e["state"], e["level"], "api" if "raw" in e and "level" in e["raw"] else "bus")
           for e in at(rx, "/all")]  # fmt: skip
    assert got == [
        ("Created", "ERROR", "bus"), ("Completed", "INFO", "bus"),
        ("Created", "ERROR", "api"), ("Completed", "INFO", "api"),
    ]  # fmt: skip
    assert [e["description"] for e in at(rx, "/oncall")] == [
        "Error while creating entity for deploying Vm"
    ] * 2
    created = tmp_path / "created.json"
    created.write_text(off_bus[1])
    shown = cli("match", "--event", str(created)).stdout
    assert "skips   all: not the outcome phase (ActionEvent Created)" in shown


def test_alert_levels_per_type_and_bad_values(tmp_path: Path) -> None:
    alert = (FIXTURES / "amqp" / "AlertEvent.json").read_text()
    line = json.dumps(json.loads(alert)) + "\n"
    with Receiver() as rx:
        subscribe("ALERT.*", "--level", "ERROR", "--to", rx.url)
        r = run_process("listen", "--source", "stdin", input=line)
        assert r.exit_code == 0 and rx.requests == []  # WARN by default
        env = {**os.environ, "CSNOTIFY_CLOUDSTACK_ALERT_LEVELS": "ALERT.MEM*=ERROR"}
        r = run_process("listen", "--source", "stdin", input=line, env=env)
        assert r.exit_code == 0, r.stderr
    (event,) = [req.json()["event"] for req in rx.requests]
    assert (event["level"], event["subject"]) == ("ERROR", json.loads(alert)["body"]["subject"])
    assert event["description"] == json.loads(alert)["body"]["body"]
    bad = run_process("config", "set", "cloudstack.alert_levels", "ALERT.HOST=LOUD")
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1
    assert "ALERT_TYPE=LEVEL" in bad.stderr


def test_titles_read_well_from_every_source() -> None:
    from csnotify.channels.base import Message
    from csnotify.channels.human import render_message
    from csnotify.events import normalise
    from csnotify.models import Endpoint, Subscription

    def title(doc: dict) -> str:
        (event,) = normalise(doc)
        sub = Subscription("s", ["*"], [Endpoint("mailto://a@b.example")])
        return render_message(Message(event, sub, "mailto://a@b.example"))[0]

    lines = [json.loads(line) for line in OPERATIONS.read_text().splitlines()]
    completed = [m for m in lines if '"status":"Completed"' in m["body_raw"]]
    failed_job = lines[-1]
    assert (
        title(completed[0])
        == "[CloudStack] VM.START Completed: " + completed[0]["routing_key"].rsplit(".", 1)[1]
    )
    assert title(failed_job).startswith("[ERROR] VM.STOP failed: ")
    assert title(failed_job).endswith("(Unable to stop web-02: host kvm-03 is down)")
    alert = json.loads((FIXTURES / "amqp" / "AlertEvent.json").read_text())
    assert title(alert) == f"[WARN] ALERT.MEMORY: {alert['body']['subject']}"
    bare = {"id": "e1", "type": "ALERT.STORAGE", "category": "ActionEvent", "source": "stdin"}
    assert title(bare) == "[CloudStack] ALERT.STORAGE"  # nothing dangling


def test_a_group_of_bus_job_events_names_the_operations(cli) -> None:
    """Issue 13 point 4: grouped into one message, the async jobs' completions are named by
    their operations (VM.START, VM.STOP), never as 'complete', with the failure's text."""
    from receivers import SmtpSink

    with SmtpSink() as smtp:
        cli("subscribe", "VM.*", "--name", "jobs", "--category", "AsyncJobEvent", "--state",
            "complete", "--group-wait", "1s", "--to", smtp.uri())  # fmt: skip
        r = cli("dispatch", "-", input=OPERATIONS.read_text())
        assert r.exit_code == 0, r.stderr
    ((_f, _to, msg),) = smtp.messages
    assert msg["Subject"] == "[CloudStack] 2 events: 1 VM.START, 1 VM.STOP"
    part = msg.get_payload(0) if msg.is_multipart() else msg
    text = part.get_payload(decode=True).decode()
    assert "complete" not in text.lower().replace("completed", "")
    (failed,) = [line for line in text.splitlines() if " ERROR " in line]
    assert "ERROR VM.STOP" in failed and failed.endswith(
        ": Unable to stop web-02: host kvm-03 is down"
    )


def test_cloudstack_body_for_api_events_has_gsons_keys_order_and_escaping() -> None:
    from csnotify.events import cloudstack_description, hashmap_order, normalise

    item = json.loads((FIXTURES / "api" / "listevents_response.json").read_text())
    row = {**item["listeventsresponse"]["event"][0], "description": "key=env & <b>"}
    (event,) = normalise(row)
    body = cloudstack_description(event)
    keys = list(json.loads(body))
    assert keys == hashmap_order(keys)
    assert "key\\u003denv \\u0026 \\u003cb\\u003e" in body
    assert "user" not in keys and "account" not in keys  # no UUIDs known: left out, as Gson
