"""`csnotify simulate` as CloudStack: request signing, listEvents as CloudStack applies its
filters, and event-bus publishing exactly as RabbitMQEventBus does."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers import FIXTURES, load_fixture
from services import bus, simulator  # noqa: F401 - fixtures

from csnotify.events import CATEGORIES, parse_bus_body
from csnotify.signing import api_signature
from csnotify.simulator.server import Api, Behaviour, EventLog, list_events

ROWS = load_fixture("api/listevents_response.json")["listeventsresponse"]["event"]


def signed(params: dict[str, str], secret: str = "SecretKeyXyz") -> dict[str, str]:
    return {**params, "signature": api_signature(params, secret)}


def api() -> Api:
    log = EventLog()
    for row in reversed(ROWS):  # oldest first, as they were made
        log.add(row)
    return Api("AbCdEfGh123", "SecretKeyXyz", log)


def base_params(**extra: str) -> dict[str, str]:
    return {"command": "listEvents", "response": "json", "apiKey": "AbCdEfGh123",
            "signatureVersion": "3", "expires": "2999-01-01T00:00:00+0000", **extra}  # fmt: skip


def test_signature_is_verified_as_cloudstack_does() -> None:
    sample = load_fixture("api/signed_request_example.json")
    a = api()
    params = {**sample["params"], "signature": sample["signature"]}
    status, doc = a.answer(params)
    assert status == 401  # the fixture's expires (2024) has passed
    params = signed({**sample["params"], "expires": "2999-01-01T00:00:00+0000"})
    assert a.answer(params)[0] == 200
    status, doc = a.answer({**params, "signature": "AAAA" + params["signature"][4:]})
    assert status == 401
    assert doc == load_fixture("api/error_401_bad_signature.json")
    assert a.answer(signed({**params, "apiKey": "other"}))[0] == 401
    unsigned_v3 = {k: v for k, v in sample["params"].items() if k != "expires"}
    assert a.answer(signed(unsigned_v3))[0] == 401  # signatureVersion 3 needs expires


def by_second(rows: list[dict]) -> list[tuple[str, list[str]]]:
    """Rows as CloudStack orders them: newest second first, ties in no order."""
    seconds: dict[str, list[str]] = {}
    for row in rows:
        seconds.setdefault(row["created"], []).append(row["id"])
    return [(created, sorted(ids)) for created, ids in seconds.items()]


def test_list_events_order_and_paging() -> None:
    a = api()
    status, doc = a.answer(signed(base_params()))
    assert status == 200
    assert by_second(doc["listeventsresponse"]["event"]) == by_second(ROWS)
    _, page2 = a.answer(signed(base_params(page="2", pagesize="2")))
    assert page2["listeventsresponse"]["count"] == 3
    (only,) = page2["listeventsresponse"]["event"]
    assert only["id"] in {r["id"] for r in ROWS[1:]}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"startdate": "2024-05-14 10:22:20"}, [0]),
        ({"startdate": "2024-05-14 10:22:18"}, [0, 1, 2]),
        ({"enddate": "2024-05-14 10:22:18"}, [1, 2]),
        ({"enddate": "2024-05-14"}, [0, 1, 2]),
        ({"startdate": "2024-05-15"}, []),
        ({"type": "VM.START"}, [0, 1, 2]),
        ({"type": "VM.STOP"}, []),
        ({"level": "ERROR"}, []),
        ({"keyword": "successfully"}, [0]),
        ({"account": "admin", "listall": "true"}, [0, 1, 2]),
    ],
)
def test_list_events_filters(params: dict[str, str], expected: list[int]) -> None:
    log = EventLog()
    for row in reversed(ROWS):
        log.add(row)
    status, doc = list_events(log, params)
    assert status == 200
    assert by_second(doc["listeventsresponse"].get("event", [])) == by_second(
        [ROWS[i] for i in expected]
    )
    if not expected:
        assert doc == {"listeventsresponse": {}}


def test_other_commands() -> None:
    a = api()
    status, doc = a.answer(signed(base_params(command="listCapabilities")))
    assert status == 200 and doc["listcapabilitiesresponse"]["capability"][
        "cloudstackversion"
    ].startswith("4.20")
    status, doc = a.answer(signed(base_params(command="listApis")))
    assert status == 200 and "listEvents" in [x["name"] for x in doc["listapisresponse"]["api"]]
    status, doc = a.answer(signed(base_params(command="deployVirtualMachine")))
    assert status == 432 and doc["deployvirtualmachineresponse"]["errorcode"] == 432
    status, _ = a.answer(signed(base_params(page="zero")))
    assert status == 431


def test_events_command_through_the_simulator(cli, tmp_path: Path) -> None:
    replay = tmp_path / "replay.json"
    replay.write_text((FIXTURES / "api" / "listevents_response.json").read_text())
    # the sample rows are written in UTC: a server whose JVM runs in UTC
    with simulator(tmp_path, "--replay", str(replay), "--rate", "0", "--timezone", "UTC") as sim:
        sim.wait_generated()
        env = {"CSNOTIFY_CLOUDSTACK_URL": sim.url, "CSNOTIFY_CLOUDSTACK_API_KEY": "test-api-key",
               "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "test-secret-key"}  # fmt: skip
        r = cli("events", "--json", env=env)
        assert r.exit_code == 0, r.stderr
        lines = [json.loads(line) for line in r.stdout.splitlines()]
        assert sorted(e["id"] for e in lines) == sorted(row["id"] for row in ROWS)
        assert lines[0]["id"] == ROWS[0]["id"]
        assert lines[0]["created"] == "2024-05-14T10:22:31Z"
        r = cli("events", "--since", "2024-05-14T10:22:20Z", "--json", env=env)
        assert len(r.stdout.splitlines()) == 1
        assert cli("events", "--level", "ERROR", env=env).stderr.strip() == "no events"
        table = cli("events", "--type", "VM.START", "--limit", "2", env=env).stdout
        assert table.splitlines()[0].split()[:3] == ["CREATED", "TYPE", "LEVEL"]
        assert len(table.splitlines()) == 3
        r = cli("events", env={**env, "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "wrong"}, expect=3)
        assert r.exit_code == 3
        assert r.stderr.strip().startswith(
            "csnotify: error: CloudStack refused the API key or signature (401"
        )
        assert sim.stats()["requests"]["listEvents"] >= 5


def test_missing_keys_and_unreachable_api(cli) -> None:
    r = cli("events", expect=2)
    assert r.exit_code == 2 and "no CloudStack API key" in r.stderr
    env = {"CSNOTIFY_CLOUDSTACK_URL": "http://127.0.0.1:9/client/api", "CSNOTIFY_CLOUDSTACK_API_KEY": "k",
           "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "s"}  # fmt: skip
    r = cli("events", env=env, expect=3)
    assert r.exit_code == 3 and "cannot reach the CloudStack API" in r.stderr


def test_bus_publishing_is_cloudstacks(tmp_path: Path, bus) -> None:  # noqa: F811
    import aio_pika

    async def bind_and_collect(ready: asyncio.Event, out: list) -> None:
        conn = await aio_pika.connect(bus.url)
        async with conn:
            channel = await conn.channel()
            exchange = await channel.declare_exchange(
                bus.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(bus.queue, durable=True)
            await queue.bind(exchange, "#")
            ready.set()
            while len(out) < 200:
                message = await queue.get(fail=False, no_ack=True)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                out.append(message)

    async def main() -> list:
        ready, out = asyncio.Event(), []
        task = asyncio.create_task(bind_and_collect(ready, out))
        await ready.wait()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "csnotify", "simulate", "--listen", "127.0.0.1:0", "--json", "--amqp", bus.url,
            "--exchange", bus.exchange, "--count", "200", "--rate", "0", "--seed", "3",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.wait_for(task, 30)
        proc.terminate()
        await proc.wait()
        return out

    messages = asyncio.run(main())
    categories = set()
    for m in messages:
        parts = m.routing_key.split(".")
        assert len(parts) == 5 and parts[0] == "management-server"
        assert parts[1] in CATEGORIES
        assert all(p and "." not in p for p in parts)
        assert m.content_type == "text/plain"
        assert m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert not m.headers
        event = parse_bus_body(m.body, m.routing_key)
        categories.add(event.category)
    assert categories == set(CATEGORIES)  # all five (seed 3 makes an alert among the first 200)


# -- where deployments differ (README "Tested against") --------------------------------


def burst(n: int, created: str = "2026-11-26T09:00:00-0500") -> EventLog:
    log = EventLog()
    for i in range(n):
        log.add({**ROWS[0], "id": f"00000000-0000-4000-8000-{i:012d}", "created": created})
    return log


def test_ties_come_back_in_a_new_order_on_every_query() -> None:
    log = burst(40)
    orders = {
        tuple(
            e["id"]
            for e in list_events(log, {"page": "1", "pagesize": "40"})[1]["listeventsresponse"][
                "event"
            ]
        )
        for _ in range(5)
    }
    assert len(orders) > 1
    # so paging one second by page numbers can miss rows and repeat others
    pages = [list_events(log, {"page": str(p), "pagesize": "10"})[1] for p in (1, 2, 3, 4)]
    assert all(p["listeventsresponse"]["count"] == 40 for p in pages)


def test_page_size_limit_and_page_past_the_end() -> None:
    how = Behaviour(max_page_size=20)
    log = burst(25)
    status, doc = list_events(log, {"page": "1", "pagesize": "21"}, how)
    assert status == 431
    assert doc["listeventsresponse"]["errortext"] == (
        "Page size can't exceed max allowed page size value: 20"
    )
    assert len(list_events(log, {}, how)[1]["listeventsresponse"]["event"]) == 20  # default
    assert list_events(log, {"page": "3", "pagesize": "20"}, how)[1] == {
        "listeventsresponse": {"count": 25}
    }
    assert list_events(log, {"page": "1", "pagesize": "-1"}, how)[0] == 431
    assert list_events(log, {"pagesize": "5"}, how)[1]["listeventsresponse"]["errortext"] == (
        '"page" parameter is required when "pagesize" is specified'
    )
    assert list_events(log, {"page": "2"}, how)[0] == 431
    assert len(list_events(log, {"pagesize": "-1"}, how)[1]["listeventsresponse"]["event"]) == 25
    status, doc = list_events(log, {"startdate": "last tuesday"}, how)
    assert (
        status == 431
        and "Unable to parse date last tuesday" in doc["listeventsresponse"]["errortext"]
    )


def test_dates_are_read_in_the_servers_zone_and_names_exactly() -> None:
    how = Behaviour(zone=ZoneInfo("America/New_York"))
    log = burst(3)  # 09:00:00-0500 = 14:00:00Z
    for params, found in (
        ({"startdate": "2026-11-26 09:00:00"}, 3),
        ({"startdate": "2026-11-26 09:00:01"}, 0),
        ({"startdate": "2026-11-26T14:00:01+0000"}, 0),
        ({"startdate": "2026-11-26T13:59:59+0000"}, 3),
        ({"enddate": "2026-11-26"}, 3),  # a date-only end is 23:59:59 that day
        ({"startdate": "2026-11-26"}, 3),
        ({"enddate": "2026-11-25"}, 0),
        ({"startDate": "2099-01-01 00:00:00"}, 3),  # not CloudStack's name: ignored
    ):
        doc = list_events(log, params, how)[1]["listeventsresponse"]
        assert len(doc.get("event", [])) == found, params


def test_post_form_bodies_are_read_like_query_strings(tmp_path: Path) -> None:
    import urllib.parse
    import urllib.request

    with simulator(tmp_path, "--count", "30", "--rate", "0", "--timezone", "Asia/Kolkata") as sim:
        sim.wait_generated()
        params = signed(
            {**base_params(apiKey="test-api-key"), "listall": "true"}, "test-secret-key"
        )
        body = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(urllib.request.Request(sim.url, data=body)) as resp:
            doc = json.loads(resp.read())
        rows = doc["listeventsresponse"]["event"]
        assert rows and all(r["created"].endswith("+0530") for r in rows)
        assert sim.info["timezone"] == "Asia/Kolkata"


def test_a_vm_start_moves_through_starting_and_records_usage_before_completed() -> None:
    """UserVmStateListener and VirtualMachineManagerImpl.orchestrateStart: Stopped ->
    Starting (StartRequested), Starting -> Running (OperationSucceeded), the usage event
    VM.START right after the last post-transition message, then the Completed
    ActionEvent and the job's complete."""
    from datetime import UTC, datetime

    from csnotify.simulator.generator import OPERATIONS, Generator

    (start,) = [o for o in OPERATIONS if o.event_type == "VM.START"]
    moment = datetime(2024, 5, 14, 10, 22, 31, tzinfo=UTC)
    items = list(Generator(seed=1).operation(start, lambda: moment, failed=False))
    seen = [
        (i.category, i.routing_key.split(".")[2], i.body.get("old-state"), i.body.get("new-state"))
        for i in items[4:]
    ]
    assert seen == [
        ("ResourceStateEvent", "StartRequested", "Stopped", "Starting"),
        ("ResourceStateEvent", "StartRequested", "Stopped", "Starting"),
        ("ResourceStateEvent", "OperationSucceeded", "Starting", "Running"),
        ("ResourceStateEvent", "OperationSucceeded", "Starting", "Running"),
        ("UsageEvent", "VM-START", None, None),
        ("ActionEvent", "VM-START", None, None),
        ("AsyncJobEvent", "complete", None, None),
    ]


def test_operations_are_sequenced_as_cloudstack_does() -> None:
    from csnotify.simulator.generator import Generator

    items = []
    stream = Generator(seed=5, alert_rate=0, failure_rate=0).events()
    while len(items) < 9 or items[-1].routing_key.split(".")[2] != "complete":
        items.append(next(stream))
    kinds = [(i.category, i.routing_key.split(".")[2]) for i in items]
    # ApiServer.queueCommand records Scheduled, then AsyncJobManagerImpl publishes submit
    assert [c for c, _ in kinds[:2]] == ["ActionEvent", "AsyncJobEvent"]
    assert kinds[1][1] == "submit" and kinds[-1][1] == "complete"
    states = [i.list_item["state"] for i in items if i.list_item]
    assert states == ["Scheduled", "Started", "Completed"]
    scheduled = next(i.list_item for i in items if i.list_item)
    assert all(
        i.list_item["parentid"] == scheduled["id"]
        for i in items
        if i.list_item and i.list_item["state"] != "Scheduled"
    )
    moves = [i for i in items if i.category == "ResourceStateEvent"]
    for pre, post in zip(moves[::2], moves[1::2], strict=True):
        if pre.body["resource"] == "VirtualMachine":  # UserVmStateListener adds the status
            assert (pre.body["status"], post.body["status"]) == (
                "preStateTransitionEvent", "postStateTransitionEvent",
            )  # fmt: skip
        else:  # volume, snapshot and network listeners publish byte-identical twins
            assert "status" not in pre.body and pre.body_text == post.body_text
    # one transition's new state is the next one's old state (a VM: Stopped -> Starting
    # -> Running, VirtualMachineManagerImpl.orchestrateStart)
    states = [(m.body["old-state"], m.body["new-state"]) for m in moves[::2]]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(states))
    # usage is recorded while the operation runs, before its Completed ActionEvent
    # (UserVmStateListener.postStateTransitionEvent; interceptComplete comes after)
    order = [(i.category, (i.list_item or {}).get("state")) for i in items]
    if ("UsageEvent", None) in order:
        assert order.index(("UsageEvent", None)) < order.index(("ActionEvent", "Completed"))
    assert [k for c, k in kinds if c == "AsyncJobEvent"] == ["submit", "update", "complete"]
    assert "jobResult" in items[-1].body
    usage = [i.body["resource"] for i in items if i.category == "UsageEvent"]
    assert all(u.startswith("com.cloud.") for u in usage)


def test_list_accounts_and_users_by_name_as_cloudstack() -> None:
    """The simulator's listAccounts by name and domainid and listUsers by username, as
    QueryManagerImpl searches for the root admin holding its keys."""
    from csnotify.simulator.server import TENANT_DOMAINS, TENANTS

    directory = Api("k", "s", EventLog()).directory
    domain = {path: uuid for uuid, path in TENANT_DOMAINS}
    customers, partners = domain["ROOT/customers"], domain["ROOT/partners"]

    def accounts(**params: str) -> list[str]:
        status, doc = directory.answer("listAccounts", params)
        assert status == 200, doc
        return sorted(a["name"] for a in doc["listaccountsresponse"].get("account", []))

    def users(**params: str) -> list[str]:
        status, doc = directory.answer("listUsers", params)
        assert status == 200, doc
        return sorted(u["id"] for u in doc["listusersresponse"].get("user", []))

    # listAccounts: a name in one domain, compared without case; not in another domain
    assert accounts(name="acme", domainid=customers) == ["acme"]
    assert accounts(name="ACME", domainid=customers) == ["acme"]
    assert accounts(name="acme", domainid=partners) == []
    # domainid alone is that domain; with isrecursive or listall its subdomains too
    assert accounts(domainid=customers) == ["acme", "custadmin", "globex"]
    assert accounts(domainid=customers, isrecursive="true") == ["acme", "custadmin", "globex",
                                                                "hooli"]  # fmt: skip
    assert accounts(domainid=customers, listall="true") == accounts(
        domainid=customers, isrecursive="true")  # fmt: skip
    # neither: the caller's own account; listall: every account, never a project's
    assert accounts() == ["admin"]
    assert len(accounts(listall="true")) == len(TENANTS) + 1
    # an unknown domain UUID: ParamProcessWorker's 431
    status, doc = directory.answer("listAccounts", {"name": "acme", "domainid": "nope"})
    assert status == 431 and "entity does not exist" in doc["listaccountsresponse"]["errortext"]
    # listUsers: username a LIKE pattern over every user with listall, else the caller's own
    acme = next(t[0] for t in TENANTS if t[2] == "acme")
    assert users(username="acme", listall="true") == [acme]
    assert users(username="ACME", listall="true") == [acme]
    assert users(username="acme") == []
    # every tenant's user, the root admin and initech's second user, also named admin
    assert len(users(username="%", listall="true")) == len(TENANTS) + 2
    assert len(users(username="admin", listall="true")) == 2
    assert users(username="acm_", listall="true") == [acme]
    assert users(username="acme", domainid=partners) == []
    assert users(username="acme", domainid=customers) == [acme]
    assert users(account="acme", domainid=customers) == [acme]
