"""CloudStack-signed requests to ``csnotify serve``: the user is found through the
simulator's getUser/getUserKeys with the admin keys csnotify holds, its signature checked
as CloudStack checks one; signatures made by the ``cs`` client's own signing code and by
hand (headers) are taken, anything altered, expired or unknown is a 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from apiserver import ApiServer, is_problem
from services import simulator

PUBLIC = "https://93.184.216.34/hook"


def expires(seconds: float = 300) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S+0000")


def cs_signed(api_key: str, secret: str, method: str, path: str, body: bytes = b"",
              **query: str) -> dict[str, str]:  # fmt: skip
    """The query of a request signed by the cs client's own code (cs.CloudStack._sign)."""
    from cs import CloudStack

    params = {**query, "apiKey": api_key, "signatureVersion": "3", "expires": expires(),
              "command": f"{method} {path}"}  # fmt: skip
    if body:
        params["bodysha256"] = hashlib.sha256(body).hexdigest()
    CloudStack(endpoint="http://unused", key=api_key, secret=secret)._sign(params)
    params.pop("command")
    params.pop("bodysha256", None)
    return params


def hand_signed_headers(api_key: str, secret: str, method: str, path: str, body: bytes,
                        when: str | None = None) -> dict[str, str]:  # fmt: skip
    """The header form, signed by hand as CloudStack's ApiServer.verifyRequest checks."""
    when = when or expires()
    params = {"apiKey": api_key, "expires": when, "signatureVersion": "3",
              "command": f"{method} {path}"}  # fmt: skip
    if body:
        params["bodysha256"] = hashlib.sha256(body).hexdigest()
    text = "&".join(f"{k}={quote(params[k], safe='*').replace('+', '%20')}" for k in sorted(params))
    digest = hmac.new(secret.encode(), text.lower().encode(), hashlib.sha1).digest()
    return {"X-CS-ApiKey": api_key, "X-CS-Expires": when,
            "X-CS-Signature": base64.b64encode(digest).decode()}  # fmt: skip


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest):
    """serve with the simulator's admin keys; ``@pytest.mark.parametrize("served",
    [{"CSNOTIFY_...": ...}], indirect=True)`` adds settings."""
    with simulator(tmp_path, "--count", "0") as sim:
        env = {"CSNOTIFY_CLOUDSTACK_URL": sim.url, "CSNOTIFY_CLOUDSTACK_API_KEY": "test-api-key",
               "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "test-secret-key",
               **getattr(request, "param", {})}  # fmt: skip
        with ApiServer(env=env) as server:
            yield server, sim


def test_a_cs_signed_and_a_hand_signed_request_act_for_their_cloudstack_user(served, cli) -> None:
    server, sim = served
    url = server.url
    body = json.dumps(
        {"name": "acme-hooks", "patterns": ["VM.*"], "endpoints": [{"uri": PUBLIC}]}
    ).encode()
    headers = hand_signed_headers(
        "acme-api-key", "acme-secret-key", "POST", "/v1/subscriptions", body
    )
    r = httpx.post(url + "/v1/subscriptions", content=body, headers=headers, timeout=30)
    assert r.status_code == 201, r.text
    assert r.json()["owner"] == {"scope": "account", "account": "acme", "domain": "ROOT/customers"}
    q = cs_signed("acme-api-key", "acme-secret-key", "GET", "/v1/subscriptions")
    r = httpx.get(url + "/v1/subscriptions", params=q, timeout=30)
    assert r.status_code == 200, r.text
    assert [s["name"] for s in r.json()] == ["acme-hooks"]
    # another account of the domain sees nothing of it; its domain admin does; root all
    q = cs_signed("globex-api-key", "globex-secret-key", "GET", "/v1/subscriptions/acme-hooks")
    is_problem(httpx.get(url + "/v1/subscriptions/acme-hooks", params=q, timeout=30), 404)
    q = cs_signed("custadmin-api-key", "custadmin-secret-key", "GET", "/v1/whoami")
    assert httpx.get(url + "/v1/whoami", params=q, timeout=30).json() == {
        "account": "custadmin", "domain": "ROOT/customers", "scope": "domain"}  # fmt: skip
    q = cs_signed("test-api-key", "test-secret-key", "GET", "/v1/whoami")
    assert httpx.get(url + "/v1/whoami", params=q, timeout=30).json()["scope"] == "global"
    # looked up once per key within api.auth_cache_ttl
    for _ in range(3):
        q = cs_signed("acme-api-key", "acme-secret-key", "GET", "/v1/whoami")
        assert httpx.get(url + "/v1/whoami", params=q, timeout=30).status_code == 200
    assert sim.stats()["requests"]["getUser"] == 4  # acme, globex, custadmin, admin
    assert cli("show", "acme-hooks").exit_code == 0


def test_altered_expired_replayed_or_unknown_signatures_are_refused(served) -> None:
    server, _sim = served
    url = server.url
    body = json.dumps({"patterns": ["VM.*"], "endpoints": [{"uri": PUBLIC}]}).encode()
    good = hand_signed_headers("acme-api-key", "acme-secret-key", "POST", "/v1/subscriptions", body)
    tampered = body.replace(b"VM.*", b"*")
    cases = {
        "body changed": (url + "/v1/subscriptions", "POST", tampered, good),
        "other path": (url + "/v1/subscriptions/x/disable", "POST", body, good),
        "other method": (url + "/v1/subscriptions", "GET", b"", good),
        "expired": (url + "/v1/subscriptions", "POST", body, hand_signed_headers(
            "acme-api-key", "acme-secret-key", "POST", "/v1/subscriptions", body, expires(-60))),
        "wrong secret": (url + "/v1/subscriptions", "POST", body, hand_signed_headers(
            "acme-api-key", "globex-secret-key", "POST", "/v1/subscriptions", body)),
        "unknown key": (url + "/v1/subscriptions", "POST", body, hand_signed_headers(
            "nobody-api-key", "x", "POST", "/v1/subscriptions", body)),
    }  # fmt: skip
    for what, (target, method, content, headers) in cases.items():
        doc = is_problem(
            httpx.request(method, target, content=content, headers=headers, timeout=30), 401
        )
        assert "secret" not in doc["detail"], what
    q = cs_signed("acme-api-key", "acme-secret-key", "GET", "/v1/whoami")
    q.pop("expires")
    q.pop("signatureVersion")
    doc = is_problem(httpx.get(url + "/v1/whoami", params=q, timeout=30), 401)
    assert "signatureVersion=3" in doc["detail"]
    assert httpx.get(url + "/v1/subscriptions", headers=good, timeout=30).status_code == 401
    r = httpx.post(url + "/v1/subscriptions", content=body, headers=good, timeout=30)
    assert r.status_code == 201, r.text  # the untouched request still goes through
    code, _out, err = server.stop()
    assert code == 0 and "acme-secret-key" not in err and good["X-CS-Signature"] not in err


def test_without_admin_keys_signed_requests_are_refused_with_the_reason(cli) -> None:
    with ApiServer() as server:
        q = cs_signed("acme-api-key", "acme-secret-key", "GET", "/v1/whoami")
        doc = is_problem(httpx.get(server.url + "/v1/whoami", params=q, timeout=30), 401)
        assert "cloudstack.api_key" in doc["detail"]


def burst(url: str, keys: list[str], secret: str) -> list[int]:
    """One signed GET /v1/whoami per key, all at once; their statuses."""
    import asyncio

    async def all_at_once() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:

            async def one(key: str) -> int:
                q = cs_signed(key, secret, "GET", "/v1/whoami")
                return (await client.get(url + "/v1/whoami", params=q)).status_code

            return await asyncio.gather(*(one(key) for key in keys))

    return asyncio.run(all_at_once())


def test_requests_that_come_together_with_a_new_key_look_its_user_up_once(served) -> None:
    """A burst of signed requests with a key not yet known (after start, or when
    api.auth_cache_ttl has run out) asks CloudStack once, not once per request."""
    server, sim = served
    assert burst(server.url, ["acme-api-key"] * 40, "acme-secret-key") == [200] * 40
    requests = sim.stats()["requests"]
    assert (requests["getUser"], requests["getUserKeys"], requests["listDomains"]) == (1, 1, 1)


@pytest.mark.parametrize("served", [{"CSNOTIFY_API_RATE_LIMIT": "10"}], indirect=True)
def test_wrong_keys_sent_all_at_once_cost_no_more_look_ups_than_sent_in_turn(served) -> None:
    """Past api.rate_limit refusals a minute an address gets 429 before its request costs
    a look-up in CloudStack, also when the requests come together (each check under way
    counts as a refusal until it is known)."""
    server, sim = served
    statuses = burst(server.url, [f"guess-{n}" for n in range(60)], "x")
    assert sorted(set(statuses)) == [401, 429] and statuses.count(401) <= 11
    assert sim.stats()["requests"].get("getUser", 0) <= 11


@pytest.mark.parametrize("served", [{"CSNOTIFY_API_RATE_LIMIT": "3"}], indirect=True)
def test_users_of_one_name_in_two_domains_have_a_rate_limit_each(served) -> None:
    """initech's user "admin" (ROOT/partners) using up its api.rate_limit leaves the root
    admin's, also named "admin", untouched."""
    server, _sim = served
    partner = burst(server.url, ["partner-admin-api-key"] * 4, "partner-admin-secret-key")
    assert sorted(partner) == [200, 200, 200, 429]
    assert burst(server.url, ["test-api-key"], "test-secret-key") == [200]
    code, _out, err = server.stop()
    assert code == 0 and "caller=cs:ROOT/partners/admin" in err and "caller=cs:ROOT/admin" in err
