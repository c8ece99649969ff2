"""CloudMonkey against ``csnotify serve``'s ``/client/api``: a client written here as cmk's
Go code makes its requests (apache/cloudstack-cloudmonkey cmd/network.go, NewAPIRequest,
encodeRequestParams and executeRequest; config/cache.go, UpdateCache for ``sync``), signed
with the simulator's users' keys, which csnotify looks up with getUser/getUserKeys. One
simulator and one server for the module."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest
from apiserver import ApiServer
from helpers import run_process
from services import simulator

PUBLIC = "https://93.184.216.34/hook"


class CmkError(Exception):
    def __init__(self, status: int, doc: dict[str, Any], line: str) -> None:
        super().__init__(line)
        self.status, self.doc, self.line = status, doc, line


class Cmk:
    """What cmk sends for ``cmk VERB NOUN key=value ...`` and what it makes of the answer:
    the command, the arguments, response=json, signatureversion=3 and expires 15 minutes
    ahead in RFC 3339, apiKey; sorted, each value url.QueryEscape'd with '+' as %20 and
    '*' kept, lower-cased, HMAC-SHA1 with the secret, base64. A GET with the query, or
    with ``postrequest`` on, a POSTed form holding the signature too. The answer is the
    object under the key ending in 'response'; one with ``errorcode`` is an error, printed
    as ``(HTTP errorcode, error code cserrorcode) errortext``."""

    def __init__(self, url: str, api_key: str, secret: str, post: bool = False) -> None:
        self.url, self.api_key, self.secret, self.post = url + "/client/api", api_key, secret, post
        self.apis: dict[str, dict[str, Any]] = {}

    @staticmethod
    def encode(params: list[tuple[str, str]]) -> str:
        first: dict[str, str] = {}
        for key, value in params:
            first.setdefault(key, value)  # url.Values.Get: the first value
        return "&".join(
            f"{k}={quote_plus(first[k]).replace('+', '%20').replace('%2A', '*')}"
            for k in sorted(first)
        )

    def call(self, api: str, *args: str, secret: str | None = None) -> dict[str, Any]:
        params = [("command", api)]
        params += [tuple(a.split("=", 1)) for a in args if "=" in a]  # type: ignore[misc]
        expires = (datetime.now(UTC) + timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
        params += [("response", "json"), ("signatureversion", "3"), ("expires", expires),
                   ("apiKey", self.api_key)]  # fmt: skip
        encoded = self.encode(params)
        mac = hmac.new((secret or self.secret).encode(), encoded.lower().encode(), hashlib.sha1)
        signature = base64.b64encode(mac.digest()).decode()
        if self.post:
            form: dict[str, list[str]] = {}
            for key, value in [*params, ("signature", signature)]:
                form.setdefault(key, []).append(value)
            r = httpx.post(self.url, data=form, timeout=30)
        else:
            r = httpx.get(f"{self.url}?{encoded}&signature={quote_plus(signature)}", timeout=30)
        data = r.json()
        (key,) = [k for k in data if k.endswith("response")]
        answer: dict[str, Any] = data[key]
        if "errorcode" in answer:
            line = (f"(HTTP {answer['errorcode']}, error code {answer.get('cserrorcode')})"
                    f" {answer['errortext']}")  # fmt: skip
            raise CmkError(r.status_code, data, line)
        assert r.status_code == 200
        return answer

    def sync(self) -> int:
        """``cmk sync``: listApis listall=true, read as UpdateCache reads it."""
        answer = self.call("listApis", "listall=true")
        for api in answer["api"]:
            name, verb = api["name"], ""
            for ch in name:
                if not ch.islower():
                    break
                verb += ch
            params = {p["name"]: (p["type"], bool(p["required"]), str(p["description"]))
                      for p in api["params"]}  # fmt: skip
            assert isinstance(api["isasync"], bool) and isinstance(api["description"], str)
            responses = [r["name"] for r in api["response"]]
            self.apis[name.lower()] = {"name": name, "verb": verb,
                                       "noun": name[len(verb):].lower(), "params": params,
                                       "response": responses}  # fmt: skip
        return int(answer["count"])

    def run(self, verb: str, noun: str, *args: str) -> dict[str, Any]:
        """``cmk VERB NOUN args``: the command the synced cache names; required ones checked
        as cmd/api.go checks them (an argument that starts with the name and has a '=')."""
        api = self.apis[verb + noun]
        missing = [p for p, (_t, req, _d) in api["params"].items()
                   if req and not any(a.startswith(p) and "=" in a for a in args)]  # fmt: skip
        assert not missing, f"cmk: Missing required parameters: {missing}"
        return self.call(api["name"], *args)


@contextmanager
def serving(base: Path) -> Iterator[tuple[ApiServer, dict[str, str]]]:
    """A simulator and a ``csnotify serve`` using its admin keys, with a store in ``base``."""
    (base / "home").mkdir(parents=True)
    with simulator(base, "--count", "0") as sim:
        env = {name: value for name, value in os.environ.items()
               if not name.startswith("CSNOTIFY_")}  # fmt: skip
        env |= {"HOME": str(base / "home"), "CSNOTIFY_DB": str(base / "csnotify.db"),
                "CSNOTIFY_CONFIG": str(base / "config.toml"), "CSNOTIFY_CLOUDSTACK_URL": sim.url,
                "CSNOTIFY_CLOUDSTACK_API_KEY": "test-api-key",
                "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "test-secret-key"}  # fmt: skip
        with ApiServer(env=env) as server:
            server.env = env
            yield server, env


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, dict[str, str]]]:
    with serving(tmp_path_factory.mktemp("cmk")) as both:
        yield both


def cmk(served: tuple[ApiServer, dict[str, str]], user: str, post: bool = False) -> Cmk:
    client = Cmk(served[0].url, f"{user}-api-key", f"{user}-secret-key", post)
    client.sync()
    return client


def shell_list(env: dict[str, str]) -> list[dict[str, Any]]:
    r = run_process("list", "--json", env=env)
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("post", [False, True], ids=["get", "post-form"])
def test_cmk_syncs_creates_lists_updates_and_deletes(served, post: bool) -> None:
    client = Cmk(served[0].url, "acme-api-key", "acme-secret-key", post)
    assert client.sync() == len(client.apis) >= 11
    assert client.apis["createsubscription"]["verb"] == "create"
    assert client.apis["createsubscription"]["noun"] == "subscription"
    assert client.apis["listsubscriptions"]["noun"] == "subscriptions"
    assert client.apis["createsubscription"]["params"]["patterns"][:2] == ("list", True)
    name = f"acme-{'post' if post else 'get'}"
    created = client.run(
        "create", "subscription", f"name={name}", "patterns=VM.*,VOLUME.CREATE",
        f"endpoints={PUBLIC}", "where=resource_name~^web-", "key=generate",
    )["subscription"]  # fmt: skip
    assert created["patterns"] == ["VM.*", "VOLUME.CREATE"]
    assert [e["uri"] for e in created["endpoints"]] == [PUBLIC]
    assert created["owner"] == {"scope": "account", "account": "acme", "domain": "ROOT/customers"}
    assert created["generated_key"].startswith("whsec_")
    listed = client.run("list", "subscriptions")
    assert listed["count"] == 1 and listed["subscription"][0]["name"] == name
    # what cmk made is what the shell sees
    (shown,) = [s for s in shell_list(served[1]) if s["name"] == name]
    assert shown["where"] == ["resource_name~^web-"]
    updated = client.run(
        "update", "subscription", f"name={name}", "level=WARN", f"newname={name}-2"
    )["subscription"]  # fmt: skip
    assert (updated["name"], updated["level"]) == (f"{name}-2", "WARN")
    assert (
        client.run("disable", "subscription", f"name={name}-2")["subscription"]["enabled"] is False
    )
    assert client.run("delete", "subscription", f"name={name}-2") == {"success": True}
    assert client.run("list", "subscriptions") == {}  # an empty ListResponse, as CloudStack's
    assert all(s["name"] != f"{name}-2" for s in shell_list(served[1]))


def test_an_endpoint_with_a_comma_goes_in_the_map_form(served) -> None:
    client = cmk(served, "acme", post=True)
    uri = "mailtos://user:pw@93.184.216.34?to=a@example.com,b@example.com"
    created = client.run(
        "create", "subscription", "name=acme-mail", "patterns=VM.*",
        f"endpoints[0].uri={uri}", f"endpoints[1].uri={PUBLIC}",
    )["subscription"]  # fmt: skip
    assert len(created["endpoints"]) == 2
    with pytest.raises(CmkError) as refused:
        client.run("update", "subscription", "name=acme-mail", f"endpoints={PUBLIC}",
                   f"endpoints[0].uri={PUBLIC}")  # fmt: skip
    assert "not both" in refused.value.line
    client.run("delete", "subscription", "name=acme-mail")


def test_another_account_sees_nothing_and_a_wrong_signature_is_a_401(served) -> None:
    acme, globex = cmk(served, "acme"), cmk(served, "globex")
    acme.run("create", "subscription", "name=acme-own", "patterns=VM.*", f"endpoints={PUBLIC}")
    try:
        assert globex.run("list", "subscriptions") == {}
        assert globex.run("list", "subscriptions", "name=acme-own") == {}
        with pytest.raises(CmkError) as refused:
            globex.run("delete", "subscription", "name=acme-own")
        assert refused.value.status == 431
        assert "acme-own" in refused.value.line
        with pytest.raises(CmkError) as refused:
            acme.call("listSubscriptions", secret="globex-secret-key")
        assert refused.value.status == 401
        assert refused.value.doc == {"listsubscriptionsresponse": {
            "uuidList": [], "errorcode": 401,
            "errortext": "unable to verify user credentials and/or request signature"}}  # fmt: skip
        assert acme.run("list", "subscriptions")["count"] == 1
    finally:
        acme.run("delete", "subscription", "name=acme-own")


def test_bad_parameters_are_a_431_with_the_clis_line_and_nothing_is_written(served) -> None:
    client = cmk(served, "acme")
    cases = {
        ("level=LOUD",): "unknown level 'LOUD'; use one of INFO, WARN, ERROR",
        ("colour=red",): "unknown parameter 'colour'",
        ("enabled=maybe",): "parameter 'enabled' must be true or false",
    }
    for extra, said in cases.items():
        with pytest.raises(CmkError) as refused:
            client.run("create", "subscription", "name=acme-bad", "patterns=VM.*",
                       f"endpoints={PUBLIC}", *extra)  # fmt: skip
        answer = refused.value.doc["createsubscriptionresponse"]
        assert refused.value.status == answer["errorcode"] == 431, extra
        assert answer["cserrorcode"] == 4350
        assert said in answer["errortext"] and "\n" not in answer["errortext"]
    with pytest.raises(CmkError) as refused:
        client.call("createSubscription", "patterns=VM.*")
    assert refused.value.line.startswith(
        "(HTTP 431, error code 4350) missing parameter 'endpoints'"
    )
    # the policy: a tenant may not run commands on the csnotify host
    with pytest.raises(CmkError) as refused:
        client.run("create", "subscription", "name=acme-bad", "patterns=VM.*",
                   "endpoints=cmd:/bin/true")  # fmt: skip
    assert refused.value.status == 531
    assert client.run("list", "subscriptions") == {}
    assert all(s["name"] != "acme-bad" for s in shell_list(served[1]))
    with pytest.raises(CmkError) as refused:
        client.call("rebootEverything")
    assert refused.value.status == 432
    assert refused.value.doc["errorresponse"]["cserrorcode"] == 9999


def test_match_event_types_and_deliveries(served) -> None:
    client = cmk(served, "acme")
    client.run("create", "subscription", "name=acme-vm", "patterns=VM.*", f"endpoints={PUBLIC}")
    try:
        types = client.run("list", "eventtypes", "match=VM.ST*")
        assert {"name": "VM.START"} in types["eventtype"] and types["count"] >= 2
        found = client.run("match", "event", "type=VM.START", "where=account=acme")
        assert found["event"]["type"] == "VM.START"
        assert [v["subscription"] for v in found["subscription"]] == ["acme-vm"]
        assert client.run("list", "deliveries", "subscription=acme-vm") == {}
        with pytest.raises(CmkError) as refused:
            client.run("list", "deliveries", "limit=0")
        assert refused.value.status == 431
    finally:
        client.run("delete", "subscription", "name=acme-vm")


def test_a_bearer_token_and_an_oversized_form(served) -> None:
    server, env = served
    r = run_process("token", "create", "--account", "acme", "--domain", "ROOT/customers",
                    "--json", env=env)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    token = json.loads(r.stdout)["token"]
    r = httpx.get(server.url + "/client/api", params={"command": "listApis", "response": "json"},
                  headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
    assert r.status_code == 200 and r.json()["listapisresponse"]["count"] >= 11
    r = httpx.get(server.url + "/client/api", params={"response": "json"},
                  headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
    assert r.status_code == 432
    assert r.json()["errorresponse"]["errortext"].startswith("no command given; listApis")
    client = Cmk(server.url, "acme-api-key", "acme-secret-key", post=True)
    with pytest.raises(CmkError) as refused:
        client.call("createSubscription", "patterns=VM.*", f"endpoints={PUBLIC}",
                    "title=" + "x" * 70_000)  # fmt: skip
    assert refused.value.status == 431
    assert "larger than 65536 bytes (api.max_body_bytes)" in refused.value.line
    assert client.call("listSubscriptions") == {}


def test_the_cs_client_works_unchanged_too(served) -> None:
    """The ``cs`` library (its own signing, GET and POST, lists joined with commas)."""
    from cs import CloudStack, CloudStackApiException

    for method in ("get", "post"):
        cs = CloudStack(endpoint=served[0].url + "/client/api", key="globex-api-key",
                        secret="globex-secret-key", method=method)  # fmt: skip
        made = cs.createSubscription(name=f"globex-cs-{method}", patterns=["VM.*", "HOST.*"],
                                     endpoints=[PUBLIC])  # fmt: skip
        assert made["subscription"]["patterns"] == ["VM.*", "HOST.*"]
        assert [s["name"] for s in cs.listSubscriptions()["subscription"]] == [
            f"globex-cs-{method}"
        ]
        with pytest.raises(CloudStackApiException) as refused:
            cs.updateSubscription(name=f"globex-cs-{method}", level="LOUD")
        assert refused.value.error["errorcode"] == 431
        assert cs.deleteSubscription(name=f"globex-cs-{method}") == {"success": True}


def test_a_body_that_cannot_be_decoded_is_refused_saying_so(served) -> None:
    """A form that is not what its Content-Type says, a body that is not what its
    Content-Encoding says: the caller's fault, answered as such (431 here, 400 under /v1)
    with one line, never an internal error."""
    server, env = served
    r = run_process("token", "create", "--account", "acme", "--domain", "ROOT/customers",
                    "--json", env=env)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    auth = {"Authorization": f"Bearer {json.loads(r.stdout)['token']}"}
    api = server.url + "/client/api?command=listSubscriptions"
    cases = [
        (api, {"Content-Type": "multipart/form-data; boundary=zzz"}, b"no boundary here"),
        (api, {"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"},
         b"name=not-gzip"),
    ]  # fmt: skip
    for url, headers, body in cases:
        r = httpx.post(url, content=body, headers={**auth, **headers}, timeout=30)
        assert r.status_code == 431, r.text
        line = r.json()["listsubscriptionsresponse"]["errortext"]
        assert "internal error" not in line and ("Content-Type" in line or "Encoding" in line)
    r = httpx.post(server.url + "/v1/subscriptions", content=b"{not gzip",
                   headers={**auth, "Content-Type": "application/json",
                            "Content-Encoding": "gzip"}, timeout=30)  # fmt: skip
    assert r.status_code == 400 and "Content-Encoding" in r.json()["detail"], r.text


def test_the_access_log_names_the_command_and_no_secret(tmp_path: Path) -> None:
    """A server of its own: it is stopped to read what it logged."""
    with serving(tmp_path / "own") as own:
        server, _env = own
        cmk(own, "acme").run("list", "subscriptions")
        client = Cmk(server.url, "acme-api-key", "acme-secret-key", post=True)
        with pytest.raises(CmkError):
            client.call("createSubscription", "patterns=VM.*", "title=" + "x" * 70_000)
        r = httpx.post(server.url + "/client/api?command=listSubscriptions", content=b"x",
                       headers={"Content-Type": "application/x-www-form-urlencoded",
                                "Content-Encoding": "gzip"}, timeout=30)  # fmt: skip
        assert r.status_code in (401, 431), r.text
        code, _out, err = server.stop()
    assert code == 0
    assert "GET /client/api listApis 200" in err and "GET /client/api listSubscriptions 200" in err
    assert "POST /client/api - 431" in err  # too large to read: no command known
    assert "acme-secret-key" not in err and "signature=" not in err and "Bearer" not in err
    assert "internal error" not in err
