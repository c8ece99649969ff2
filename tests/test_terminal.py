"""The tool as a person sees it: list, status and the demo in a real terminal (tmux) of 80
columns: tables fit and are whole; with NO_COLOR, no escape codes at all."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from helpers import run_process

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is needed for the terminal check"
)
BOX = set("┏┓┗┛┃━┡┩└┘│─┌┐├┤┬┴┼╇╈┳┻╋")


def screen(
    command: list[str], wait: float, env: dict[str, str] | None = None, height: int = 50
) -> list[str]:
    """Run ``command`` in a fresh 80 x ``height`` tmux window and return the screen's lines."""
    sock = f"csnotify-test-{uuid.uuid4().hex[:8]}"
    full_env = {**os.environ, "TERM": "xterm-256color", **(env or {})}
    full_env.pop("TMUX", None)
    quoted = " ".join(f"'{c}'" for c in command)
    subprocess.run(["tmux", "-L", sock, "new-session", "-d", "-x", "80", "-y", str(height),
                    f"{quoted}; echo __done__; sleep 30"], env=full_env, check=True)  # fmt: skip
    try:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["tmux", "-L", sock, "capture-pane", "-p"],
                capture_output=True,
                text=True,
                check=True,
            )
            if "__done__" in out.stdout:
                break
            time.sleep(0.2)
        return out.stdout.rstrip("\n").splitlines()
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], check=False)


def assert_tables_whole(lines: list[str]) -> None:
    table = [ln for ln in lines if ln and ln[0] in BOX]
    assert table, "no table on the screen:\n" + "\n".join(lines)
    widths = {len(ln.rstrip()) for ln in table}
    assert len(widths) == 1, "table rows of different widths (garbled):\n" + "\n".join(table)
    assert widths.pop() <= 80
    for ln in table:
        assert ln.rstrip()[-1] in BOX, f"a table row does not end with its border: {ln!r}"


@pytest.fixture
def populated(db_file) -> None:
    for i, (pattern, uri) in enumerate([
        ("VM.*", "https://hooks.example.com/cloudstack/events/with/a/rather/long/path"),
        ("*", "mailto://alerts:secret@smtp.example.com:587?to=oncall@example.com&from=cs@example.com"),
        ("ALERT.*", "smseagle://token@sms.example.com/+15551234567"),
    ]):  # fmt: skip
        assert (
            run_process(
                "subscribe", pattern, "--to", uri, "--name", f"sub-{i}-with-a-long-name"
            ).exit_code
            == 0
        )


def test_list_fits_80_columns(populated) -> None:
    lines = screen([sys.executable, "-m", "csnotify", "list"], 20)
    assert all(len(ln) <= 80 for ln in lines)
    assert_tables_whole(lines)
    for i in range(3):  # each name whole, on its row: never cut, never folded
        assert any(ln.startswith(f"│ sub-{i}-with-a-long-name │") for ln in lines), lines


def test_status_fits_80_columns(populated) -> None:
    lines = screen([sys.executable, "-m", "csnotify", "status"], 20)
    assert all(len(ln) <= 80 for ln in lines)
    assert_tables_whole(lines)
    assert "subscriptions: 3 enabled of 3" in "\n".join(lines)


def test_demo_fits_80_columns() -> None:
    lines = screen([sys.executable, "-m", "csnotify", "demo", "--duration", "5"], 60)
    text = "\n".join(lines)
    assert "demo done (api source" in text, text
    assert_tables_whole(lines)
    assert "vm-webhook" in text and "switched off" in text
    # the summary is broken between words, never inside one, and says why SMS stay at 0
    summary = " ".join(text[text.index("demo done") :].split())
    words = set(summary.split())
    for word in ("signed", "webhooks", "verified,", "SMS", "received;", "switched", "off:",
                 "ALERT.*", "publishes", "listEvents;", "--amqp"):  # fmt: skip
        assert word in words, f"{word!r} broken or missing:\n{text}"
    assert all(not ln.startswith(" ") for ln in lines[lines.index(next(
        ln for ln in lines if ln.startswith("demo done"))):])  # fmt: skip


@pytest.mark.parametrize("command", [["list"], ["status"], ["demo", "--duration", "5"]])
def test_no_color_means_no_escape_codes(populated, command: list[str]) -> None:
    import pexpect  # a test dependency (pyproject.toml): missing, it is an error

    env = {**os.environ, "NO_COLOR": "1", "TERM": "xterm-256color"}
    child = pexpect.spawn(
        sys.executable, ["-m", "csnotify", *command], env=env, dimensions=(50, 80), timeout=60
    )
    child.expect(pexpect.EOF)
    raw = child.before.decode()
    assert "\x1b" not in raw
    assert any(ch in raw for ch in BOX)  # still a table, just without colour


def test_dispatch_shows_progress_on_a_terminal_and_not_when_piped(tmp_path) -> None:
    import json as _json

    import pexpect

    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(_json.dumps({"id": f"e{i}", "type": "X.Y", "created": "2026-11-25T10:00:00Z",
                                             "source": "stdin"}) for i in range(3000)) + "\n")  # fmt: skip
    env = {**os.environ, "TERM": "xterm-256color"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "csnotify", "dispatch", str(events)],
        env=env,
        dimensions=(24, 80),
        timeout=60,
    )
    child.expect(pexpect.EOF)
    assert "dispatching" in child.before.decode()
    piped = run_process("dispatch", str(events))
    assert "dispatching" not in piped.stdout + piped.stderr
    assert "read 3000: 3000 events, 0 matched" in piped.stdout


def test_deliveries_at_80_columns_keep_the_subscription_and_time_whole() -> None:
    name = "a-subscription-with-a-long-name"
    assert run_process("subscribe", "*", "--name", name, "--to",
                       "cmd:/bin/false --an-argument-long-enough-to-need-folding-at-eighty-columns",
                       ).exit_code == 0  # fmt: skip
    event = '{"id": "e1", "type": "VM.START", "created": "2026-11-25T10:00:00Z"}'
    run_process("-c", "delivery.retry_schedule=0s", "dispatch", "-", input=event)
    lines = screen([sys.executable, "-m", "csnotify", "deliveries"], 20)
    assert_tables_whole(lines)
    text = "\n".join(lines)
    assert name in text, text  # whole, on one line
    assert re.search(r"│ \d\d-\d\d \d\d:\d\d:\d\d │", text), text


def test_status_watch_accounts_for_every_subscription_on_a_small_terminal(tmp_path) -> None:
    import sqlite3

    for i in range(30):  # two endpoints each: 60 rows would not fit 24 lines
        r = run_process("subscribe", "VM.*", "--to", f"https://h{i}.example/x",
                        "--to", f"https://g{i}.example/y", "--name", f"sub-{i:02d}")  # fmt: skip
        assert r.exit_code == 0
    db = os.environ["CSNOTIFY_DB"]
    with sqlite3.connect(db) as conn:  # sub-17 is failing: it must be among those shown
        conn.execute("UPDATE endpoints SET consecutive_failures = 4, total_failures = 4"
                     " WHERE uri = 'https://h17.example/x'")  # fmt: skip
    lines = screen([sys.executable, "-m", "csnotify", "status", "--watch"], 6, height=24)
    text = "\n".join(lines)
    assert_tables_whole(lines)
    shown = set(re.findall(r"sub-\d\d", text))
    assert "sub-17" in shown  # the troubled one first
    assert len(shown) < 30, text
    assert f"{30 - len(shown)} more subscriptions not shown (0 of them failing)" in text, text
