"""`csnotify match` and the explanation in `listen --dry-run`: which subscriptions an event
reaches, and why the others do not."""

from __future__ import annotations

import json

import pytest
from helpers import load_fixture, run_process


@pytest.fixture
def subscribed(cli) -> None:
    for args in (
        ["VM.*", "--to", "https://hooks.example.com/vm", "--name", "vm"],
        ["*", "--level", "ERROR", "--to", "https://hooks.example.com/err", "--name", "errors"],
        [
            "VM.START",
            "--where",
            "account=admin",
            "--to",
            "https://hooks.example.com/a",
            "--name",
            "admins",
        ],
        ["VOLUME.*", "--to", "https://hooks.example.com/v", "--name", "volumes", "--disabled"],
    ):
        assert cli("subscribe", *args).exit_code == 0


def test_match_explains_each_subscription(cli, subscribed) -> None:
    r = cli("match", "VM.START", "--where", "account=bob")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "skips   admins: filter account=admin failed (account is 'bob')" in lines
    assert "skips   errors: level INFO is below its minimum ERROR" in lines
    assert "reaches vm: pattern VM.* matches VM.START" in lines
    assert "          -> https://hooks.example.com/vm" in lines
    assert "skips   volumes: the subscription is disabled" in lines


def test_match_json(cli, subscribed) -> None:
    r = cli("match", "vm.start", "--level", "ERROR", "--where", "account=admin", "--json")
    report = r.json()
    verdicts = {v["subscription"]: v for v in report["subscriptions"]}
    assert {n for n, v in verdicts.items() if v["matched"]} == {"vm", "errors", "admins"}
    assert verdicts["admins"]["pattern"] == "VM.START"
    assert verdicts["errors"]["endpoints"] == [
        {"uri": "https://hooks.example.com/err", "enabled": True, "muted": None}
    ]
    assert verdicts["volumes"]["matched"] is False and verdicts["volumes"]["endpoints"] == []
    assert report["event"]["account"] == "admin" and report["event"]["level"] == "ERROR"


def test_match_an_event_file(cli, subscribed, tmp_path) -> None:
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(load_fixture("amqp/AlertEvent.json")))
    r = cli("match", "--event", str(path), "--json")
    verdicts = {v["subscription"]: v["matched"] for v in r.json()["subscriptions"]}
    assert verdicts == {"admins": False, "errors": False, "vm": False, "volumes": False}
    assert r.json()["event"]["type"] == "ALERT.MEMORY"


def test_match_and_dry_run_show_muted_endpoints(cli, subscribed) -> None:
    r = cli("mute", "vm", "--pattern", "VM.START", "--for", "1h", "--reason", "deploy", "--json")
    mute_id = r.json()["id"]
    lines = cli("match", "VM.START").stdout.splitlines()
    assert "reaches vm: pattern VM.* matches VM.START" in lines
    muted = f"          -> https://hooks.example.com/vm (muted, not sent: mute {mute_id} until"
    assert any(line.startswith(muted) and line.endswith(": deploy)") for line in lines)
    assert "muted" not in cli("match", "VM.STOP").stdout
    event = {"id": "e1", "type": "VM.START", "source": "stdin"}
    r = run_process("listen", "--source", "stdin", "--dry-run", input=json.dumps(event) + "\n")
    assert f"vm -> https://hooks.example.com/vm (muted by mute {mute_id})" in r.stdout


def test_match_bad_input(cli, subscribed) -> None:
    assert cli("match", expect=2).exit_code == 2
    r = cli("match", "VM.START", "--where", "colour=red", expect=2)
    assert r.exit_code == 2 and "use FIELD=VALUE" in r.stderr
    assert cli("match", "VM.START", "--level", "LOUD", expect=2).exit_code == 2


def test_dry_run_says_why_the_others_skip(subscribed) -> None:
    item = load_fixture("api/listevents_response.json")["listeventsresponse"]["event"][0]
    r = run_process("listen", "--source", "stdin", "--dry-run", input=json.dumps(item) + "\n")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert (
        lines[0].startswith("VM.START 9b2f6c1e")
        and "admins -> https://hooks.example.com/a" in lines[0]
    )
    assert "  skips errors: level INFO is below its minimum ERROR" in lines
    assert "  skips volumes: the subscription is disabled" in lines
