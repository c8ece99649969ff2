"""API-made subscriptions on the real sources. Off the event bus: messages carry UUIDs only, the
names (account, domain) come from the simulator's API through issue 10's look-ups, and
the subscription of account acme gets acme's events and no other account's."""

from __future__ import annotations

import json
import os
from pathlib import Path

from apiserver import ApiServer, make_token
from helpers import FIXTURES, run_process
from receivers import Receiver
from services import bus, simulator  # noqa: F401 - fixtures

from csnotify.simulator.server import TENANTS

KEYS = {"CSNOTIFY_CLOUDSTACK_API_KEY": "test-api-key",
        "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "test-secret-key"}  # fmt: skip
LOOPBACK = {"CSNOTIFY_API_ALLOW_NETWORKS": "127.0.0.0/8", "CSNOTIFY_API_ALLOW_SCHEMES": "http"}


def message_of(user_id: str, account_id: str, second: int) -> tuple[str, bytes]:
    sample = json.loads((FIXTURES / "amqp" / "ActionEvent.json").read_text())
    body = dict(sample["body"])
    body |= {"user": user_id, "account": account_id,
             "eventDateTime": f"2024-05-14 10:22:{second:02d} +0000"}  # fmt: skip
    return sample["routing_key"], json.dumps(body).encode()


TENANT = {t[2]: t for t in TENANTS}


def owned_bus_run(tmp_path: Path, bus, token: str, publishers: list[str]) -> dict[str, list]:  # noqa: F811
    """An API-made subscription 'owned' (``token``'s) beside an operator's 'ops', both to
    '*'; one bus message from each account in ``publishers``, taken by 'listen --source
    amqp --once' with names looked up in the simulator: (account, domain) each received."""
    with Receiver() as rx, simulator(tmp_path, "--count", "0") as sim:
        env = {**os.environ, **bus.env(), **KEYS, **LOOPBACK, "CSNOTIFY_CLOUDSTACK_URL": sim.url}
        assert run_process("listen", "--source", "amqp", "--once", env=env).exit_code == 0
        with ApiServer(env=LOOPBACK) as server, server.client(token) as http:
            r = http.post("/v1/subscriptions", json={
                "name": "owned", "patterns": ["*"], "endpoints": [{"uri": f"{rx.url}/owned"}]})  # fmt: skip
            assert r.status_code == 201, r.text
        assert (
            run_process("subscribe", "*", "--to", f"{rx.url}/ops", "--name", "ops").exit_code == 0
        )
        for second, name in enumerate(publishers, start=1):
            bus.publish(*message_of(TENANT[name][0], TENANT[name][1], second))
        r = run_process("listen", "--source", "amqp", "--once", env=env)
        assert r.exit_code == 0, r.stderr
    return {
        path: sorted((q.json()["event"]["account"], q.json()["event"]["domain"])
                     for q in rx.requests if q.path == f"/{path}")
        for path in ("owned", "ops")
    }  # fmt: skip


def test_a_tenants_subscription_gets_only_its_accounts_bus_events(tmp_path: Path, bus) -> None:  # noqa: F811
    got = owned_bus_run(tmp_path, bus, make_token("acme", "ROOT/customers"), ["acme", "initech"])
    assert got["ops"] == [("acme", "customers"), ("initech", "partners")]
    assert got["owned"] == [("acme", "customers")]


def test_a_domain_admins_subscription_gets_its_subdomains_bus_events(tmp_path: Path, bus) -> None:  # noqa: F811
    """Bus events carry no domain path: the domain's path comes from listDomains through
    the name look-ups, so a domain's subscription takes its subdomains' events too, and a
    sibling domain of the same depth stays outside."""
    token = make_token("custadmin", "ROOT/customers", "domain")
    got = owned_bus_run(tmp_path, bus, token, ["acme", "hooli", "initech"])
    assert got["owned"] == [("acme", "customers"), ("hooli", "eu")]
    assert len(got["ops"]) == 3


def test_a_tenants_subscriptions_get_only_their_scopes_events_from_the_api_source(
    tmp_path: Path,
) -> None:
    """listEvents rows of three accounts in three domains, served by the simulator and
    read by 'listen --source api': the account's subscription gets its own, the domain
    admin's those of ROOT/customers and its subdomain (listEvents' domainpath)."""
    from datetime import UTC, datetime

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")
    rows = [
        {"id": f"ev-{account}", "type": "VM.START", "level": "INFO", "account": account,
         "domain": path.rsplit("/", 1)[-1], "domainpath": "/" + path.removeprefix("ROOT/") + "/",
         "username": account, "description": "started", "resourcetype": "VirtualMachine",
         "resourcename": f"vm-{account}", "created": now, "state": "Completed"}
        for account, path in [("acme", "ROOT/customers"), ("eu-shop", "ROOT/customers/eu"),
                              ("initech", "ROOT/partners")]
    ]  # fmt: skip
    replay = tmp_path / "rows.jsonl"
    replay.write_text("".join(json.dumps(r) + "\n" for r in rows))
    acme = make_token("acme", "ROOT/customers")
    admin = make_token("custadmin", "ROOT/customers", "domain")
    with Receiver() as rx, simulator(tmp_path, "--replay", str(replay), "--rate", "0") as sim:
        sim.wait_generated()
        env = {**os.environ, **KEYS, **LOOPBACK, "CSNOTIFY_CLOUDSTACK_URL": sim.url}
        with ApiServer(env=LOOPBACK) as server:
            for token, name in [(acme, "acme"), (admin, "customers")]:
                with server.client(token) as http:
                    assert http.post("/v1/subscriptions", json={
                        "name": name, "patterns": ["*"],
                        "endpoints": [{"uri": f"{rx.url}/{name}"}]}).status_code == 201  # fmt: skip
        r = run_process("listen", "--source", "api", "--once", "--since", "10m", env=env)
        assert r.exit_code == 0, r.stderr
    got = {p: sorted(q.json()["event"]["account"] for q in rx.requests if q.path == p)
           for p in ("/acme", "/customers")}  # fmt: skip
    assert got == {"/acme": ["acme"], "/customers": ["acme", "eu-shop"]}
