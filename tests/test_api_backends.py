"""Tokens and owned subscriptions on every store backend (SQLite, MariaDB, PostgreSQL):
migration m005 made the tables, `csnotify serve` and the CLI share them."""

from __future__ import annotations

from apiserver import ApiServer, is_problem, make_token
from dbservers import backend  # noqa: F401 - fixture
from helpers import run_process

PUBLIC = "https://93.184.216.34/hook"


def test_tokens_and_owners_on_every_backend(cli, backend: str) -> None:  # noqa: F811
    token = make_token("acme", "ROOT/customers")
    other = make_token("globex", "ROOT/customers")
    with ApiServer() as server, server.client(token) as http:
        r = http.post("/v1/subscriptions", json={
            "name": "acme-vms", "patterns": ["VM.*"], "endpoints": [{"uri": PUBLIC}]})  # fmt: skip
        assert r.status_code == 201, r.text
        with server.client(other) as http2:
            is_problem(http2.get("/v1/subscriptions/acme-vms"), 404)
        shown = cli("show", "acme-vms", "--json").json()
        assert shown["owner"] == {"scope": "account", "account": "acme", "domain": "ROOT/customers"}
        token_id = "_".join(token.split("_")[1:3])
        assert cli("token", "revoke", token_id).exit_code == 0
        is_problem(http.get("/v1/subscriptions"), 401)
    listed = run_process("token", "list", "--json").json()
    assert sorted((t["account"], t["revoked"] is not None) for t in listed) == [
        ("acme", True), ("globex", False)]  # fmt: skip


def test_an_owned_subscription_keeps_its_owner_through_export_and_import(cli, tmp_path) -> None:
    token = make_token("acme", "ROOT/customers")
    with ApiServer() as server, server.client(token) as http:
        assert http.post("/v1/subscriptions", json={
            "name": "acme-vms", "patterns": ["VM.*"], "endpoints": [{"uri": PUBLIC}]}).status_code == 201  # fmt: skip
    exported = tmp_path / "subs.json"
    assert cli("export", "--with-secrets", "-o", str(exported)).exit_code == 0
    other = tmp_path / "other.db"
    r = cli("--db", str(other), "import", str(exported))
    assert r.exit_code == 0, r.stderr
    owner = {"scope": "account", "account": "acme", "domain": "ROOT/customers"}
    assert cli("--db", str(other), "show", "acme-vms", "--json").json()["owner"] == owner
    # the same file again is unchanged; a forged owner is refused in one line
    assert "unchanged" in cli("--db", str(other), "import", str(exported), "--json").stdout
    exported.write_text(exported.read_text().replace('"scope": "account"', '"scope": "root"'))
    r = cli("--db", str(other), "import", str(exported), "--replace", expect=2)
    assert r.exit_code == 2 and "'owner' must be" in r.stderr and len(r.stderr.splitlines()) == 1
