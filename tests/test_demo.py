"""`csnotify demo` end to end, as CI runs it (no terminal) and on the event bus."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import run_process
from services import AMQP_URL, require_rabbitmq


def leftovers(tmp: Path) -> set[str]:
    return {p.name for p in tmp.glob("csnotify-demo-*")}


def test_demo_without_a_terminal(tmp_path: Path) -> None:
    # its own TMPDIR: a demo running beside it (another test, another user) leaves its
    # directory in the shared one until it ends
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    home = Path(os.environ["HOME"])
    r = run_process("demo", "--duration", "5", timeout=60, env={**os.environ, "TMPDIR": str(tmp)})
    assert leftovers(tmp) == set()  # nothing left behind
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.strip().endswith("s") is False and "events" in line for line in lines)
    summary = lines[-1]
    assert summary.startswith("demo done (api source")
    assert "signed webhooks verified" in summary and "failing endpoint switched off: yes" in summary
    assert int(summary.split("; ")[1].split()[0]) > 0  # webhooks verified
    assert "\x1b[" not in r.stdout
    assert not any(home.rglob("*.db")) and not any(home.rglob("config.toml"))
    assert not Path(os.environ["CSNOTIFY_DB"]).exists()  # the user's store is not touched


def test_demo_json_summary() -> None:
    r = run_process("demo", "--duration", "4", "--json", timeout=60)
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    names = {e["subscription"]: e for e in summary["endpoints"]}
    assert set(names) == {"vm-webhook", "errors-email", "alerts-sms", "always-failing"}
    assert (
        names["always-failing"]["switched_off"] is True
        and names["always-failing"]["delivered"] == 0
    )
    assert (
        names["vm-webhook"]["delivered"] == summary["received"]["webhooks_with_valid_signature"] > 0
    )
    assert summary["received"]["webhooks_with_invalid_signature"] == 0


@pytest.mark.rabbitmq
def test_demo_on_the_event_bus() -> None:
    require_rabbitmq()
    r = run_process("demo", "--duration", "8", "--amqp", AMQP_URL, "--json", timeout=90)
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["source"] == "amqp"
    assert summary["received"]["sms"] >= 1, summary  # alerts come over the bus
    assert summary["received"]["emails"] >= 1, summary
    queues = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name"], capture_output=True, text=True, check=False
    )
    if queues.returncode == 0:
        assert "csnotify-demo-" not in queues.stdout  # the demo's queue is gone


def test_demo_falls_back_to_the_api_source() -> None:
    r = run_process(
        "demo", "--duration", "2", "--amqp", "amqp://guest:guest@127.0.0.1:1/", timeout=60
    )
    assert r.exit_code == 0, r.stderr
    assert "not usable" in r.stderr and "using the API source" in r.stderr
    assert "guest:guest" not in r.stderr
