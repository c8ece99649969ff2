"""The HTTP API through real HTTP against ``csnotify serve`` as a process, on the same
store as the CLI: a subscription made either way is the same subscription, errors are
problem+json with the CLI's own lines, tokens, scope and the endpoint policy hold."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from apiserver import ApiServer, is_problem, make_token
from helpers import run_process
from receivers import Receiver
from services import wait_for

PUBLIC = "https://93.184.216.34/hook"  # a public address: no DNS needed to check it


def cli_error(*args: str) -> str:
    """The one line the CLI prints for this input (without 'csnotify: error: ')."""
    r = run_process(*args)
    assert r.exit_code == 2, r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("csnotify: error: ")]
    return line.removeprefix("csnotify: error: ")


def test_a_subscription_made_through_the_api_is_the_one_the_cli_shows(cli) -> None:
    token = make_token("acme", "ROOT/customers")
    with ApiServer() as server, server.client(token) as http:
        r = http.post(
            "/v1/subscriptions",
            json={"name": "acme-vms", "patterns": ["VM.*"], "endpoints": [{"uri": PUBLIC}],
                  "key": "generate", "level": "WARN", "where": ["resource_name~^web-"]},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        assert r.headers["location"] == "/v1/subscriptions/acme-vms"
        made = r.json()
        assert made["generated_key"].startswith("whsec_")
        assert made["key"] != made["generated_key"]  # masked, as show --json masks it
        assert made["owner"] == {"scope": "account", "account": "acme", "domain": "ROOT/customers"}
        shown = cli("show", "acme-vms", "--json").json()
        assert shown == {k: v for k, v in made.items() if k not in ("generated_key", "notes")}
        assert made["notes"][0].startswith("acme-vms filters on names: bus events")
        assert http.get("/v1/subscriptions/acme-vms").json() == shown
        # the CLI shows the owner; and a change made at the shell is seen through the API
        assert "account ROOT/customers/acme" in cli("show", "acme-vms").stdout
        assert "acme" in cli("list").stdout
        assert cli("update", "acme-vms", "--level", "ERROR").exit_code == 0
        assert http.get("/v1/subscriptions/acme-vms").json()["level"] == "ERROR"
        # the key generated once is the one the store signs with
        revealed = cli("show", "acme-vms", "--reveal", "--json").json()
        assert revealed["key_whsec"] == made["generated_key"]


def test_settings_that_do_nothing_come_back_as_the_clis_notes(cli) -> None:
    """A group wait on a webhook, --format cloudstack with other categories, name filters
    without API keys for the bus: the API answers with the lines the CLI notes."""
    token = make_token("acme", "ROOT/customers")
    with ApiServer() as server, server.client(token) as http:
        r = http.post("/v1/subscriptions", json={
            "name": "quiet", "patterns": ["VM.*"], "endpoints": [{"uri": PUBLIC}],
            "group_wait": "30s", "format": "cloudstack", "categories": ["*"],
            "where": ["account=acme"]})  # fmt: skip
        assert r.status_code == 201, r.text
        expected = cli("subscribe", "VM.*", "--to", PUBLIC, "--name", "same", "--group-wait",
                       "30s", "--format", "cloudstack", "--category", "*", "--where",
                       "account=acme")  # fmt: skip
        noted = [ln.removeprefix("csnotify: note: ") for ln in expected.stderr.splitlines()
                 if ln.startswith("csnotify: note: ")]  # fmt: skip
        assert len(noted) == 3
        assert r.json()["notes"] == [n.replace("same", "quiet") for n in noted]
        r = http.patch("/v1/subscriptions/quiet", json={"group_wait": "0s", "format": "json",
                                                        "where": []})  # fmt: skip
        assert r.status_code == 200 and "notes" not in r.json(), r.text


def test_update_switch_test_and_delete_through_the_api(cli) -> None:
    token = make_token("acme", "ROOT/customers")
    allow = ("-c", "api.allow_schemes=https,http", "-c", "api.allow_networks=127.0.0.0/8")
    with Receiver() as receiver, ApiServer(*allow) as server, server.client(token) as http:
        assert http.post("/v1/subscriptions", json={
            "name": "s1", "patterns": ["VM.*"], "endpoints": [{"uri": receiver.url + "/a"}],
            "key": "generate"}).status_code == 201  # fmt: skip
        r = http.patch("/v1/subscriptions/s1", json={"patterns": ["VOLUME.*"], "key": None})
        assert r.status_code == 200, r.text
        assert (r.json()["patterns"], r.json()["key"]) == (["VOLUME.*"], None)
        assert http.post("/v1/subscriptions/s1/disable").json()["enabled"] is False
        assert cli("show", "s1", "--json").json()["enabled"] is False
        assert http.post("/v1/subscriptions/s1/enable").json()["enabled"] is True
        (result,) = http.post("/v1/subscriptions/s1/test").json()
        assert result["ok"] is True and result["status"] == 200
        assert receiver.requests and receiver.requests[0].path == "/a"
        r = http.patch("/v1/subscriptions/s1", json={"name": "s2"})
        assert r.json()["name"] == "s2"
        assert http.delete("/v1/subscriptions/s2").status_code == 204
        is_problem(http.get("/v1/subscriptions/s2"), 404)
        assert cli("list", "--json").json() == []


def test_every_error_is_problem_json_with_the_clis_line_and_writes_nothing(cli) -> None:
    token = make_token("acme", "ROOT/customers")
    assert cli("subscribe", "VM.*", "--to", PUBLIC, "--name", "taken").exit_code == 0
    before = cli("list", "--json").json()
    with ApiServer("-c", "api.max_body_bytes=2048") as server, server.client(token) as http:
        post = "/v1/subscriptions"
        # 400: malformed JSON, not an object, an unknown field, a wrong JSON type
        is_problem(http.post(post, content=b'{"patterns": ["VM.*"'), 400)
        is_problem(http.post(post, content=b"[1, 2]"), 400)
        deep = b'{"name": ' + b"[" * 1000 + b"]" * 1000 + b"}"  # was a 500 (RecursionError)
        assert is_problem(http.post(post, content=deep), 400)["detail"].endswith("too deeply")
        doc = is_problem(http.post(post, content=b'{"name": "x", "rate": NaN}'), 400)
        assert "NaN" in doc["detail"]
        doc = is_problem(http.post(post, json={"patterns": ["VM.*"], "to": [PUBLIC]}), 400)
        assert doc["detail"].startswith("unknown field 'to'")
        doc = is_problem(http.post(post, json={"patterns": ["VM.*"], "endpoints": [
            {"uri": PUBLIC, "bogus": 1}]}), 400)  # fmt: skip
        assert doc["detail"] == "unknown field 'bogus' in 'endpoints'; an endpoint has 'uri'"
        doc = is_problem(http.post(post, content=b'{"name": "a", "name": "b"}'), 400)
        assert doc["detail"] == "malformed JSON: the key 'name' is given twice"
        is_problem(http.post(post, json={"patterns": "VM.*", "endpoints": []}), 400)
        is_problem(http.get("/v1/deliveries", params={"limit": "lots"}), 400)
        # 401: no token, a wrong one
        is_problem(httpx_get(server.url + "/v1/subscriptions"), 401)
        is_problem(
            httpx_get(server.url + "/v1/subscriptions", "csn_tok_000000000000_" + "x" * 43), 401
        )
        # 403: an endpoint this caller may not use
        is_problem(
            http.post(post, json={"patterns": ["VM.*"], "endpoints": [{"uri": "cmd:/bin/true"}]}),
            403,
        )
        # 404: no such subscription (the CLI's line), and one outside the caller's scope
        doc = is_problem(http.get("/v1/subscriptions/nope"), 404)
        assert doc["detail"] == "no subscription named 'nope'; see 'csnotify list'"
        is_problem(http.get("/v1/subscriptions/taken"), 404)  # the operator's, not acme's
        # 409: the name is taken (names are one namespace; a tenant gets no CLI hint and
        # no word of whose it is)
        doc = is_problem(http.post(post, json={"name": "taken", "patterns": ["VM.*"],
                                               "endpoints": [{"uri": PUBLIC}]}), 409)  # fmt: skip
        assert doc["detail"] == "that name is taken; choose another 'name'"
        assert "csnotify" not in doc["detail"]
        # 413: over api.max_body_bytes
        big = {"patterns": ["VM.*"], "endpoints": [{"uri": PUBLIC}], "title": "x" * 4096}
        is_problem(http.post(post, json=big), 413)
        # 422: what the CLI refuses, in the CLI's words
        for body, args in [
            ({"patterns": ["V M"], "endpoints": [{"uri": PUBLIC}]}, ("V M", "--to", PUBLIC)),
            ({"patterns": ["VM.*"], "endpoints": [{"uri": PUBLIC}], "level": "LOUD"},
             ("VM.*", "--to", PUBLIC, "--level", "LOUD")),
            ({"patterns": ["VM.*"], "endpoints": [{"uri": PUBLIC}], "where": ["colour=red"]},
             ("VM.*", "--to", PUBLIC, "--where", "colour=red")),
            ({"patterns": ["VM.*"], "endpoints": [{"uri": PUBLIC}], "format": "xml"},
             ("VM.*", "--to", PUBLIC, "--format", "xml")),
        ]:  # fmt: skip
            doc = is_problem(http.post(post, json=body), 422)
            assert doc["detail"] == cli_error("subscribe", *args), body
        doc = is_problem(http.post(post, json={"patterns": ["VM.*"], "endpoints": []}), 422)
        assert doc["detail"] == "no endpoint; give at least one --to URI"  # the core's line
        doc = is_problem(http.get("/v1/match"), 422)
        assert doc["detail"] == cli_error("match")
        # unknown resource, method not allowed: problem+json too
        is_problem(http.get("/v1/nothing-here"), 404)
        is_problem(http.put("/v1/subscriptions"), 405)
    assert cli("list", "--json").json() == before


def httpx_get(url: str, token: str | None = None) -> object:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(url, headers=headers, timeout=30)


def test_callers_see_and_change_only_their_scope(cli) -> None:
    acme = make_token("acme", "ROOT/customers")
    globex = make_token("globex", "ROOT/customers")
    initech = make_token("initech", "ROOT/partners")
    customers_admin = make_token("custadmin", "ROOT/customers", "domain")
    root = make_token("admin", "ROOT", "global")
    assert cli("subscribe", "*", "--to", PUBLIC, "--name", "operators").exit_code == 0
    with ApiServer() as server:
        for token, name in [(acme, "acme-1"), (globex, "globex-1"), (initech, "initech-1")]:
            with server.client(token) as http:
                r = http.post("/v1/subscriptions", json={
                    "name": name, "patterns": ["VM.*"], "endpoints": [{"uri": PUBLIC}]})  # fmt: skip
                assert r.status_code == 201, r.text

        def names(token: str) -> list[str]:
            with server.client(token) as http:
                return [s["name"] for s in http.get("/v1/subscriptions").json()]

        assert names(acme) == ["acme-1"]
        assert names(globex) == ["globex-1"]  # same domain, another account
        assert names(initech) == ["initech-1"]  # another domain
        assert names(customers_admin) == ["acme-1", "globex-1"]
        assert names(root) == ["acme-1", "globex-1", "initech-1", "operators"]
        with server.client(globex) as http:  # acme's is not there for globex, whatever it tries
            for response in (
                http.get("/v1/subscriptions/acme-1"),
                http.patch("/v1/subscriptions/acme-1", json={"level": "ERROR"}),
                http.post("/v1/subscriptions/acme-1/test"),
                http.post("/v1/subscriptions/acme-1/disable"),
                http.delete("/v1/subscriptions/acme-1"),
                http.get("/v1/deliveries", params={"subscription": "acme-1"}),
            ):
                doc = is_problem(response, 404)
                assert "acme" not in doc["detail"].replace("'acme-1'", "")  # no hint of others
            verdicts = http.get("/v1/match", params={"type": "VM.START"}).json()["subscriptions"]
            assert [v["subscription"] for v in verdicts] == ["globex-1"]
        with server.client(customers_admin) as http:
            assert http.post("/v1/subscriptions/acme-1/disable").status_code == 200
            is_problem(http.delete("/v1/subscriptions/initech-1"), 404)
    assert cli("show", "acme-1", "--json").json()["enabled"] is False
    assert cli("show", "acme-1", "--json").json()["level"] == "INFO"  # globex changed nothing


@pytest.mark.parametrize(
    "uri",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.8/hook",
        "https://10.255.1.2:8443/hook",
        "https://[::1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost/hook",  # a name that resolves to loopback
        "mailtos://user:pass@127.0.0.1:465?to=ops@example.com&from=a@example.com",
        "https://[64:ff9b::a9fe:a9fe]/x",  # NAT64 of 169.254.169.254
        "https://[2002:a9fe:a9fe::]/x",  # 6to4 of it
        "https://[::ffff:10.0.0.1]/x",
    ],
    ids=[
        "ipv4-loopback",
        "ten-net",
        "ten-net-port",
        "ipv6-loopback",
        "link-local",
        "localhost",
        "mail-loopback",
        "nat64-link-local",
        "6to4-link-local",
        "mapped-ten-net",
    ],
)
def test_private_loopback_and_link_local_endpoints_are_refused(cli, uri: str) -> None:
    token = make_token("acme", "ROOT/customers")
    with ApiServer() as server, server.client(token) as http:
        doc = is_problem(http.post("/v1/subscriptions", json={
            "patterns": ["VM.*"], "endpoints": [{"uri": uri}]}), 403)  # fmt: skip
        assert "private, loopback or link-local" in doc["detail"]
        assert "pass" not in doc["detail"]  # the URI's secrets are masked
        r = http.post(
            "/v1/subscriptions", json={"patterns": ["VM.*"], "endpoints": [{"uri": PUBLIC}]}
        )
        assert r.status_code == 201
        name = r.json()["name"]
        doc = is_problem(
            http.patch(f"/v1/subscriptions/{name}", json={"endpoints": [{"uri": uri}]}), 403
        )
    assert [s["name"] for s in cli("list", "--json").json()] == [name]
    assert cli("show", name, "--json").json()["endpoints"][0]["uri"] == PUBLIC


def test_allowed_networks_and_schemes_are_settings(cli) -> None:
    token = make_token("acme", "ROOT/customers")
    body = {"patterns": ["VM.*"], "endpoints": [{"uri": "http://127.0.0.1:9/hook"}]}
    with ApiServer() as server, server.client(token) as http:
        doc = is_problem(http.post("/v1/subscriptions", json=body), 403)
        assert "http: endpoints are not allowed" in doc["detail"]
    with ApiServer("-c", "api.allow_schemes=https,http", "-c", "api.allow_networks=127.0.0.0/8") as server, server.client(token) as http:  # fmt: skip
        assert http.post("/v1/subscriptions", json=body).status_code == 201
    # the operator at a shell is not bound by the API's policy
    assert cli("subscribe", "VM.*", "--to", "https://127.0.0.1/x").exit_code == 0
    r = cli("-c", "api.allow_networks=10.0.0.0/33", "config", "show", expect=2)
    assert r.exit_code == 2 and "api.allow_networks" in r.stderr and len(r.stderr.splitlines()) == 1


def test_per_owner_limits_are_settings(cli) -> None:
    token = make_token("acme", "ROOT/customers")
    other = make_token("globex", "ROOT/customers")
    limits = ("-c", "api.max_subscriptions=2", "-c", "api.max_endpoints=2")
    one = {"patterns": ["VM.*"], "endpoints": [{"uri": PUBLIC}]}
    with ApiServer(*limits) as server, server.client(token) as http:
        three = {"patterns": ["VM.*"], "endpoints": [{"uri": f"{PUBLIC}/{i}"} for i in range(3)]}
        doc = is_problem(http.post("/v1/subscriptions", json=three), 403)
        assert "api.max_endpoints" in doc["detail"]
        assert http.post("/v1/subscriptions", json=one | {"name": "a1"}).status_code == 201
        assert http.post("/v1/subscriptions", json=one | {"name": "a2"}).status_code == 201
        doc = is_problem(http.post("/v1/subscriptions", json=one | {"name": "a3"}), 403)
        assert "api.max_subscriptions" in doc["detail"]
        with server.client(other) as http2:  # another owner has its own count
            assert http2.post("/v1/subscriptions", json=one | {"name": "g1"}).status_code == 201
    assert sorted(s["name"] for s in cli("list", "--json").json()) == ["a1", "a2", "g1"]


def test_tokens_are_shown_once_kept_as_a_hash_and_revocable(cli, db_file: Path) -> None:
    r = cli("token", "create", "--account", "acme", "--domain", "customers")
    assert r.exit_code == 0, r.stderr
    token = r.stdout.split("keep it): ")[1].strip()
    token_id = token.split("_")[1] + "_" + token.split("_")[2]
    listed = cli("token", "list", "--json").json()
    assert [t["id"] for t in listed] == [token_id] and listed[0]["domain"] == "ROOT/customers"
    assert token not in cli("token", "list").stdout
    secret = token.rsplit("_", 1)[1] if token.count("_") == 3 else token[len(f"csn_{token_id}_") :]
    conn = sqlite3.connect(db_file)
    assert all(secret not in str(row) for row in conn.execute("SELECT * FROM api_tokens"))
    conn.close()
    with ApiServer() as server, server.client(token) as http:
        assert http.get("/v1/whoami").json() == {
            "account": "acme", "domain": "ROOT/customers", "scope": "account"}  # fmt: skip
        assert cli("token", "revoke", token_id).stdout.startswith(f"revoked token {token_id} (")
        again = cli("token", "revoke", token_id).stdout
        assert f"token {token_id} (account ROOT/customers/acme) was already revoked at 20" in again
        is_problem(http.get("/v1/whoami"), 401)
    r = cli("token", "revoke", "tok_nope", expect=2)
    assert r.exit_code == 2 and "no token 'tok_nope'" in r.stderr
    for bad in (
        ("--scope", "world"),
        ("--domain", "ROOT//x"),
        ("--domain", "ROOT/../x"),
        ("--domain", "ROOT/./x"),
        ("--expires", "soon"),
        ("--expires", "0d"),  # expired as soon as made (was accepted)
    ):
        r = cli("token", "create", "--account", "acme", *bad, expect=2)
        assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert len(cli("token", "list", "--json").json()) == 1


def test_rate_limit_per_caller_and_graceful_stop(cli) -> None:
    acme, globex = make_token("acme"), make_token("globex")
    with ApiServer("-c", "api.rate_limit=3") as server:
        with server.client(acme) as http:
            assert [http.get("/v1/whoami").status_code for _ in range(3)] == [200] * 3
            r = http.get("/v1/whoami")
            is_problem(r, 429)
            assert int(r.headers["retry-after"]) >= 1
        with server.client(globex) as http:  # another caller has its own budget
            assert http.get("/v1/whoami").status_code == 200
        assert wait_for(lambda: f"api {server.url}: running" in cli("status").stdout)
        code, out, err = server.stop()
    assert code == 0, err
    assert "answered 4 2xx, 1 4xx" in out
    assert acme not in err and "Traceback" not in err
    assert "GET /v1/whoami 429" in err and "caller=tok_" in err  # the request log
    # status shows where it served and what it answered
    assert f"api {server.url}: stopped, 5 requests (4 2xx, 1 4xx)" in cli("status").stdout
    (api,) = cli("status", "--json").json()["apis"]
    assert api["url"] == server.url and api["requests"] == {"2xx": 4, "4xx": 1}
    with ApiServer("-c", "api.rate_limit=3") as guarded:
        wrong = "csn_tok_000000000000_" + "x" * 43
        with guarded.client(wrong) as http:  # guessing: three refusals, then no more tries
            assert [http.get("/v1/whoami").status_code for _ in range(4)] == [401] * 3 + [429]
            detail = is_problem(http.get("/v1/whoami"), 429)["detail"]
            assert "refused credentials from this address" in detail
        with guarded.client(globex) as http:  # a valid caller behind the same address (a
            assert http.get("/v1/whoami").status_code == 200  # proxy) is not held up


def test_serve_refuses_bad_options_in_one_line(cli) -> None:
    for args, word in [
        (("serve", "--listen", "nowhere"), "--listen"),
        (("serve", "--tls-cert", "/nonexistent.pem"), "--tls-key"),
        (("-c", "api.allow_schemes=cmd", "serve"), "api.allow_schemes"),
    ]:
        r = run_process(*args, timeout=30)
        assert r.exit_code == 2 and word in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def _listed(account: str, path: str, n: int) -> dict[str, object]:
    """An event as listEvents gives it (the api source's shape)."""
    return {"id": f"ev-{account}-{n}", "type": "VM.START", "level": "INFO", "account": account,
            "domain": path.rsplit("/", 1)[-1], "domainid": f"d-{path}",
            "domainpath": "/" + path.removeprefix("ROOT").strip("/") + ("/" if path != "ROOT" else ""),
            "username": account, "description": "started", "resourcetype": "VirtualMachine",
            "resourcename": f"vm-{n}", "created": "2026-11-26T10:00:00+0000", "state": "Completed"}  # fmt: skip


def test_listen_serves_the_api_in_the_same_process(cli) -> None:
    """`listen --api`: one process takes events and serves the API on the same store; a
    subscription made through it gets the next event the listener takes (its owner's, not
    another account's), and SIGTERM stops both, exit 0."""
    acme = make_token("acme", "ROOT/customers")
    allow = ("-c", "api.allow_schemes=http", "-c", "api.allow_networks=127.0.0.0/8")
    listen = ("listen", "--source", "stdin", "--api", "127.0.0.1:0")
    with Receiver() as receiver, ApiServer(*allow, command=listen) as server:
        with server.client(acme) as http:
            r = http.post("/v1/subscriptions", json={
                "name": "acme", "patterns": ["VM.*"], "endpoints": [{"uri": receiver.url}]})  # fmt: skip
            assert r.status_code == 201, r.text
        assert cli("list", "--json").json()[0]["name"] == "acme"  # the same store
        assert server.proc is not None and server.proc.stdin is not None
        for n in range(40):  # until the listener has taken the change (about a second)
            for account in ("globex", "acme"):
                server.proc.stdin.write(json.dumps(_listed(account, "ROOT/customers", n)) + "\n")
            server.proc.stdin.flush()
            if wait_for(lambda: receiver.requests, 0.5):
                break
        status, _out, err = server.stop()
    assert status == 0, err
    got = [r.json()["event"]["id"] for r in receiver.requests]
    assert got and all(i.startswith("ev-acme-") for i in got), got


def test_listen_api_refuses_bad_input_in_one_line(cli) -> None:
    for args, word in (
        (("--api", "nowhere"), "--api 'nowhere': give HOST:PORT"),
        (("--api", "127.0.0.1:0", "--once"), "drop --once and --dry-run"),
    ):
        r = run_process("listen", "--source", "stdin", *args, input="")
        assert r.exit_code == 2 and word in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def test_an_api_made_subscription_gets_only_its_owners_events(cli, tmp_path: Path) -> None:
    """Delivered through the real pipeline (dispatch: the matcher every source uses): an
    account's subscription to '*' gets only that account's events, a domain admin's those
    of the domain and its subdomains; the operator's gets all."""
    acme = make_token("acme", "ROOT/customers")
    globex = make_token("globex", "ROOT/customers")
    admin = make_token("custadmin", "ROOT/customers", "domain")
    allow = ("-c", "api.allow_schemes=http", "-c", "api.allow_networks=127.0.0.0/8")
    with Receiver() as receiver:
        with ApiServer(*allow) as server:
            for token, name in [(acme, "acme"), (globex, "globex"), (admin, "customers")]:
                with server.client(token) as http:
                    assert http.post("/v1/subscriptions", json={
                        "name": name, "patterns": ["*"],
                        "endpoints": [{"uri": f"{receiver.url}/{name}"}]}).status_code == 201  # fmt: skip
        assert cli("subscribe", "*", "--to", f"{receiver.url}/ops", "--name", "ops").exit_code == 0
        events = [
            _listed("acme", "ROOT/customers", 1),
            _listed("globex", "ROOT/customers", 2),
            _listed("acme", "ROOT/partners", 3),  # same account name, another domain
            _listed("eu-shop", "ROOT/customers/eu", 4),  # a subdomain
            _listed("admin", "ROOT", 5),
        ]
        listing = tmp_path / "listevents.json"
        listing.write_text(json.dumps({"listeventsresponse": {"count": 5, "event": events}}))
        net = ("-c", "api.allow_networks=127.0.0.0/8")  # the receiver is on loopback
        r = cli(*net, "dispatch", str(listing))
        assert r.exit_code == 0, r.stderr
        # the same events as JSON lines with names only (the bus's shape once names are resolved)
        lines = tmp_path / "events.jsonl"
        lines.write_text("".join(
            json.dumps({"id": f"line-{e['id']}", "type": "VM.START", "account": e["account"],
                        "domain": e["domain"], "created": "2026-11-26T10:00:00Z"}) + "\n"
            for e in events))  # fmt: skip
        assert cli(*net, "dispatch", str(lines)).exit_code == 0
    got: dict[str, set[str]] = {}
    for req in receiver.requests:
        got.setdefault(req.path.strip("/"), set()).add(req.json()["event"]["id"])
    assert got["acme"] == {"ev-acme-1", "line-ev-acme-1"}
    assert got["globex"] == {"ev-globex-2", "line-ev-globex-2"}
    # by path: the subdomain's event too; by name alone (no path): the domain itself only
    assert got["customers"] == {"ev-acme-1", "ev-globex-2", "ev-eu-shop-4", "line-ev-acme-1",
                                "line-ev-globex-2"}  # fmt: skip
    assert len(got["ops"]) == 10
    why = cli(
        "match", "VM.START", "--where", "account=acme", "--where", "domain=partners", "--json"
    )
    verdict = {v["subscription"]: v for v in why.json()["subscriptions"]}
    assert (
        verdict["acme"]["reason"]
        == "the event's domain (partners) is outside its owner's (ROOT/customers)"
    )


def test_the_address_is_checked_again_at_delivery(cli, tmp_path: Path) -> None:
    """An API-made subscription whose endpoint reaches a loopback address (allowed when it
    was written) is refused at delivery once the network is no longer allowed; the
    operator's own subscription to the same receiver is delivered."""
    token = make_token("acme", "ROOT/customers")
    allow = ("-c", "api.allow_schemes=http", "-c", "api.allow_networks=127.0.0.0/8")
    with Receiver() as receiver:
        with ApiServer(*allow) as server, server.client(token) as http:
            assert http.post("/v1/subscriptions", json={
                "name": "acme", "patterns": ["*"],
                "endpoints": [{"uri": f"{receiver.url}/acme"}]}).status_code == 201  # fmt: skip
        assert cli("subscribe", "*", "--to", f"{receiver.url}/ops", "--name", "ops").exit_code == 0
        events = tmp_path / "events.jsonl"
        events.write_text(json.dumps({"id": "e1", "type": "VM.START", "account": "acme",
                                      "domain": "customers"}) + "\n")  # fmt: skip
        r = cli("dispatch", str(events), "--json", expect=1)
        assert r.exit_code == 1 and (r.json()["delivered"], r.json()["failed"]) == (1, 1)
        assert [q.path for q in receiver.requests] == ["/ops"]
        (row,) = cli("deliveries", "acme", "--json").json()
        assert row["status"] == "failed" and "refused by the API's endpoint policy" in row["error"]
        assert "127.0.0.1" in row["error"] and row["attempts"] == 1  # not retried
        events.write_text(json.dumps({"id": "e2", "type": "VM.START", "account": "acme",
                                      "domain": "customers"}) + "\n")  # fmt: skip
        r = cli("-c", "api.allow_networks=127.0.0.0/8", "dispatch", str(events), "--json")
        assert r.exit_code == 0 and r.json()["delivered"] == 2
        assert sorted(q.path for q in receiver.requests) == ["/acme", "/ops", "/ops"]


def test_serve_takes_a_certificate_and_key_for_https(cli, tmp_path: Path) -> None:
    import ssl
    import subprocess
    import sys

    import httpx
    from receivers import self_signed

    self_signed(tmp_path)  # cert.pem and key.pem for CN=localhost
    token = make_token("acme")
    proc = subprocess.Popen(
        [sys.executable, "-m", "csnotify", "serve", "--listen", "127.0.0.1:0",
         "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving the API on https://127.0.0.1:" in line, line
        url = line.split(" on ")[1].split("/v1")[0].replace("127.0.0.1", "localhost")
        r = httpx.get(url + "/v1/whoami", headers={"Authorization": f"Bearer {token}"},
                      verify=ssl.create_default_context(cafile=str(tmp_path / "cert.pem")),
                      timeout=30)  # fmt: skip
        assert r.status_code == 200 and r.json()["account"] == "acme"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
