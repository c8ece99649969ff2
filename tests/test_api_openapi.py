"""The OpenAPI 3.1 document against the running server: every operation it lists is
called (with a valid request and, where it takes one, a bad one), each answer's status
must be one the document lists for it, its content type the listed one, and its body
valid against the listed schema (JSON Schema 2020-12, as OpenAPI 3.1 uses). Routes the
document does not list do not exist."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from apiserver import ApiServer, make_token
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

PUBLIC = "https://93.184.216.34/hook"
METHODS = ("get", "post", "patch", "delete", "put")


def check(doc: dict[str, Any], path: str, method: str, response: httpx.Response) -> None:
    operation = doc["paths"][path][method]
    documented = operation["responses"]
    status = str(response.status_code)
    assert status in documented, f"{method.upper()} {path}: {status} undocumented: {response.text}"
    content = documented[status].get("content")
    if content is None:
        assert response.content == b"", f"{method.upper()} {path}: body on {status}"
        return
    (media, spec), *_ = content.items()
    assert response.headers["content-type"].split(";")[0] == media, (method, path, status)
    resource = Resource.from_contents(doc, default_specification=DRAFT202012)
    registry = Registry().with_resource("urn:api", resource)
    schema = _rebased(spec["schema"])
    errors = list(Draft202012Validator(schema, registry=registry).iter_errors(response.json()))
    assert not errors, f"{method.upper()} {path} {status}: {errors[0].message}"


def _rebased(schema: Any) -> Any:
    """$refs inside a schema taken out of the document point back into it."""
    if isinstance(schema, dict):
        return {
            k: ("urn:api" + v if k == "$ref" and v.startswith("#") else _rebased(v))
            for k, v in schema.items()
            if k != "$id"
        }
    if isinstance(schema, list):
        return [_rebased(v) for v in schema]
    return schema


@pytest.fixture
def served(cli) -> Any:
    root = make_token("admin", "ROOT", "global")
    acme = make_token("acme", "ROOT/customers")
    assert (
        cli("subscribe", "VM.*", "--to", PUBLIC, "--name", "ops", "--key", "generate").exit_code
        == 0
    )
    with ApiServer() as server:
        yield server, root, acme


def test_every_documented_operation_answers_as_documented(served) -> None:
    server, root, acme = served
    doc = httpx.get(server.url + "/v1/openapi.json", timeout=30).json()
    assert doc["openapi"].startswith("3.1")
    Draft202012Validator.check_schema(doc["components"]["schemas"]["Subscription"])
    good_body = {
        "name": "made",
        "patterns": ["VM.*"],
        "endpoints": [{"uri": PUBLIC}],
        "key": "generate",
    }
    requests: dict[tuple[str, str], list[dict[str, Any]]] = {
        ("/v1/subscriptions", "post"): [
            {"json": good_body}, {"json": good_body}, {"json": {"x": 1}},
            {"json": {"patterns": ["V M"], "endpoints": [{"uri": PUBLIC}]}},
            {"json": {"patterns": ["VM.*"], "endpoints": [{"uri": "https://10.0.0.1/"}]}},
            {"content": b"{" + b" " * 70000 + b"}"},
        ],
        ("/v1/subscriptions/{name}", "patch"): [
            {"json": {"level": "ERROR", "key": None}}, {"json": {"level": "LOUD"}},
            {"json": {"level": 3}}, {"json": {"name": "ops"}},
        ],
        ("/v1/deliveries", "get"): [
            {"params": {"subscription": "made"}}, {"params": {"limit": "x"}},
            {"params": {"subscription": "nope"}}, {},
        ],
        ("/v1/event-types", "get"): [{"params": {"match": "VM.*"}}, {"params": {"match": "V M"}}],
        ("/v1/match", "get"): [{"params": {"type": "VM.START"}}, {}],
    }  # fmt: skip
    called = set()
    # in an order where each operation finds what it needs (delete last)
    order = ["/v1/openapi.json", "/v1/whoami", "/v1/subscriptions", "/v1/subscriptions/{name}",
             "/v1/subscriptions/{name}/test", "/v1/subscriptions/{name}/disable",
             "/v1/subscriptions/{name}/enable", "/v1/deliveries", "/v1/event-types", "/v1/match"]  # fmt: skip
    assert sorted(order) == sorted(doc["paths"])
    for path in order:
        methods = [m for m in ("get", "post", "patch", "delete") if m in doc["paths"][path]]
        for method in sorted(methods, key=lambda m: m == "delete"):
            for token in (root, acme, None):
                for name in ("made", "nope"):
                    url = server.url + path.replace("{name}", name)
                    for kwargs in requests.get((path, method), [{}]):
                        response = httpx.request(
                            method.upper(), url, timeout=30,
                            headers={"Authorization": f"Bearer {token}"} if token else {}, **kwargs,
                        )  # fmt: skip
                        check(doc, path, method, response)
                        called.add((path, method, response.status_code))
                    if "{name}" not in path:
                        break
    statuses = {s for _, _, s in called}
    assert {200, 201, 204, 400, 401, 403, 404, 409, 413, 422} <= statuses, statuses


def test_operations_the_document_does_not_list_do_not_exist(served) -> None:
    server, root, _ = served
    doc = httpx.get(server.url + "/v1/openapi.json", timeout=30).json()
    headers = {"Authorization": f"Bearer {root}"}
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                continue
            url = server.url + path.replace("{name}", "ops")
            r = httpx.request(method.upper(), url, headers=headers, timeout=30)
            assert r.status_code == 405, (method, path, r.status_code)
            assert r.headers["content-type"].startswith("application/problem+json")
    assert httpx.get(server.url + "/v2/subscriptions", headers=headers).status_code == 404
