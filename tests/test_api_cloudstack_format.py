"""Issue 13 point 5 on the API source: ``--format cloudstack`` as CloudStack's webhooks send
it, for events read by ``listen --source api``. listEvents names the owner's account and
the acting user but gives no UUID of either (EventResponse); csnotify looks them up by name
(listAccounts by name and domainid, listUsers by username) in the simulator's API, and the
body and ``User-Agent: CS-Hookshot/<account uuid>`` carry them. With those look-ups hung or
failing, the events go out without them, not held back. Real parts only: the simulator as
a process, ``csnotify listen`` as a process, a local receiver, a local HTTP proxy in front
of the simulator for the faults."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import select
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from helpers import answer_json, run_process
from receivers import Receiver
from services import simulator

from csnotify.events import hashmap_order
from csnotify.simulator.server import TENANT_DOMAINS, TENANTS

pytestmark = pytest.mark.slow

KEYS = {"CSNOTIFY_CLOUDSTACK_API_KEY": "test-api-key",
        "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "test-secret-key"}  # fmt: skip
TENANT = {t[2]: t for t in TENANTS}  # name -> (user id, account id, name, path, ...)
DOMAIN = {path: uuid for uuid, path in TENANT_DOMAINS}
# ActionEventUtils.publishOnEventBus: its keys, and one per first-class entity
ACTION_EVENT_KEYS = {"eventDateTime", "event", "status", "description", "user", "account",
                     "entity", "entityuuid", "VirtualMachine"}  # fmt: skip


def rows(tmp_path: Path) -> Path:
    """listEvents rows as CloudStack 4.20 gives them: acme's VM started by acme (ROOT/
    customers), initech's by initech (ROOT/partners); a file for ``simulate --replay``."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")
    out = []
    for n, (name, path) in enumerate([("acme", "ROOT/customers"), ("initech", "ROOT/partners")]):
        out.append({
            "id": f"0b0e0000-0000-4000-8000-00000000000{n}", "username": name,
            "type": "VM.START", "level": "INFO", "account": name, "domainid": DOMAIN[path],
            "domain": path.rsplit("/", 1)[-1], "domainpath": "/" + path.removeprefix("ROOT/") + "/",
            "description": f"Successfully completed starting Vm. Vm Id: {n} <{name}> & co",
            "resourceid": f"c3b1f2e4-6a7d-4e89-9b0a-00000000000{n}",
            "resourcetype": "VirtualMachine", "resourcename": f"vm-{name}", "created": now,
            "state": "Completed",
        })  # fmt: skip
    replay = tmp_path / "rows.jsonl"
    replay.write_text("".join(json.dumps(r) + "\n" for r in out))
    return replay


def listen_once(url: str, **extra: str) -> Any:
    env = {**os.environ, **KEYS, "CSNOTIFY_CLOUDSTACK_URL": url, **extra}
    r = run_process("listen", "--source", "api", "--once", "--since", "10m", env=env, timeout=60)
    assert r.exit_code == 0, r.stderr
    return r


def subscribe_cloudstack(rx: Receiver) -> None:
    r = run_process("subscribe", "VM.*", "--name", "cs", "--format", "cloudstack",
                    "--key", "s3cr3t", "--to", rx.url + "/cs")  # fmt: skip
    assert r.exit_code == 0, r.stderr


def test_api_events_carry_the_account_and_user_uuids_as_cloudstack_sends_them(
    tmp_path: Path,
) -> None:
    with Receiver() as rx, simulator(tmp_path, "--replay", str(rows(tmp_path)), "--rate", "0") as sim:  # fmt: skip
        sim.wait_generated()
        subscribe_cloudstack(rx)
        listen_once(sim.url)
        asked = sim.stats()["requests"]
    sent = {r.headers["X-CS-Event-ID"]: r for r in rx.requests if r.path == "/cs"}
    assert len(sent) == 2
    for n, name in enumerate(["acme", "initech"]):
        user_id, account_id = TENANT[name][0], TENANT[name][1]
        r = sent[f"0b0e0000-0000-4000-8000-00000000000{n}"]
        assert r.headers["User-Agent"] == f"CS-Hookshot/{account_id}"
        body = json.loads(r.body)
        assert (body["account"], body["user"]) == (account_id, user_id)
        assert set(body) == ACTION_EVENT_KEYS
        assert list(body) == hashmap_order(list(body))  # a HashMap's order, as Gson writes it
        assert "\\u003c" + name + "\\u003e \\u0026 co" in r.body.decode()  # Gson's escaping
        assert (
            body["entityuuid"]
            == body["VirtualMachine"]
            == f"c3b1f2e4-6a7d-4e89-9b0a-00000000000{n}"
        )
        mac = hmac.new(b"s3cr3t", r.body, hashlib.sha256).digest()
        assert r.headers["X-CS-Signature"] == base64.b64encode(mac).decode()
        assert r.headers["X-CS-Event"] == "VM.START"
    # one look-up per account and per username
    assert (asked.get("listAccounts"), asked.get("listUsers")) == (2, 2)


class FaultyProxy:
    """The simulator's API behind a proxy that passes listEvents on and, for listAccounts
    and listUsers, either never answers (``hang``: the connection is held until the client
    gives up, noted as unix times in ``given_up``) or answers 503."""

    def __init__(self, target: str, mode: str) -> None:
        self.target, self.mode = target, mode
        self.given_up: list[float] = []
        self.looked_up = 0
        self.closing = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = urlsplit(self.path).query
                command = parse_qs(query).get("command", [""])[0]
                if command in ("listAccounts", "listUsers"):
                    proxy.looked_up += 1
                    if proxy.mode == "hang":
                        proxy.hold(self.connection)
                        self.close_connection = True
                        return
                    self.answer(503, b'{"error": "unavailable"}')
                    return
                try:
                    with urllib.request.urlopen(f"{proxy.target}?{query}", timeout=10) as resp:
                        self.answer(resp.status, resp.read())
                except urllib.error.HTTPError as exc:
                    self.answer(exc.code, exc.read())

            def answer(self, status: int, body: bytes) -> None:
                answer_json(self, status, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hold(self, conn: Any) -> None:
        while not self.closing.is_set():
            readable, _, _ = select.select([conn], [], [], 0.05)
            if readable:
                try:
                    if not conn.recv(65536):
                        break
                except OSError:
                    break
        self.given_up.append(time.time())

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/client/api"

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("mode", ["hang", "fail"])
def test_with_the_lookups_hung_or_failing_api_events_go_out_without_the_uuids(
    tmp_path: Path, mode: str
) -> None:
    """The look-ups wait at most cloudstack.lookup_timeout (0.3 s here; the look-up's own
    HTTP client waits 5 s): hung, both events are delivered while their look-ups still
    hang; failing (503), they are delivered and it is said once."""
    with Receiver() as rx, simulator(tmp_path, "--replay", str(rows(tmp_path)), "--rate", "0") as sim:  # fmt: skip
        sim.wait_generated()
        proxy = FaultyProxy(sim.url, mode)
        try:
            subscribe_cloudstack(rx)
            r = listen_once(proxy.url(), CSNOTIFY_CLOUDSTACK_LOOKUP_TIMEOUT="0.3")
        finally:
            proxy.close()
    sent = [r for r in rx.requests if r.path == "/cs"]
    assert len(sent) == 2
    for req in sent:
        assert req.headers["User-Agent"] == "CS-Hookshot/"
        body = json.loads(req.body)
        assert "account" not in body and "user" not in body  # unknown: left out, as Gson does
        assert set(body) == ACTION_EVENT_KEYS - {"account", "user"}
    assert proxy.looked_up >= 1  # they were tried
    if mode == "hang":
        assert proxy.given_up, "listen ended with look-ups still open"
        assert max(req.at for req in sent) < min(proxy.given_up)
    else:
        assert r.stderr.count("names cannot be resolved") == 1, r.stderr
    assert "Traceback" not in r.stderr


def test_a_username_of_two_users_names_none() -> None:
    """A user is taken only when exactly one user has that username (the acting user may
    belong to another domain than the event's owner); an account by its name and domain."""
    from csnotify.names import ACCOUNT_BY_NAME, USER_BY_NAME, pick, request

    one = {"id": "u1", "username": "ops", "domainid": "d1"}
    two = {"id": "u2", "username": "ops", "domainid": "d2"}
    like = {"id": "u3", "username": "oPs", "domainid": "d3"}  # a LIKE/collation namesake
    assert pick((USER_BY_NAME, "ops"), [one, like]) == one
    assert pick((USER_BY_NAME, "ops"), [one, two]) is None
    assert pick((USER_BY_NAME, "ops"), []) is None
    acct = {"id": "a1", "name": "web", "domainid": "d1"}
    assert pick((ACCOUNT_BY_NAME, "d1/web"), [acct]) == acct
    assert pick((ACCOUNT_BY_NAME, "d1/web"), [{**acct, "name": "Web"}]) is None
    assert pick((ACCOUNT_BY_NAME, "d2/web"), [acct]) is None
    assert request((ACCOUNT_BY_NAME, "d1/web/x")) == (
        "listAccounts", "account", {"name": "web/x", "domainid": "d1"})  # fmt: skip
    assert request((USER_BY_NAME, "ops")) == (
        "listUsers", "user", {"username": "ops", "listall": "true"})  # fmt: skip
