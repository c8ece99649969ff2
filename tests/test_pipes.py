"""Output into a pipe whose reader is gone (`csnotify list | head -1`): the command stops
quietly, as Unix tools do, with SIGPIPE's status and nothing on stderr."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import run_process

SIGPIPE_STATUS = 141


def run_into_closed_pipe(*args: str, input: str = "") -> tuple[int, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "csnotify", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line is written
    try:
        proc.stdin.write(input)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # it stopped before reading all of it: fine
    stderr = proc.stderr.read()
    return proc.wait(timeout=60), stderr


@pytest.fixture
def subscriptions() -> None:
    for i in range(3):
        r = run_process(
            "subscribe", "VM.*", "--to", f"http://127.0.0.1:9/hook{i}", "--name", f"hook{i}"
        )
        assert r.exit_code == 0, r.stderr


@pytest.mark.parametrize(
    "command",
    [["list"], ["list", "--json"], ["status"], ["status", "--json"], ["show", "hook1", "--json"]],
)
def test_listing_into_a_closed_pipe_stops_quietly(subscriptions, command: list[str]) -> None:
    code, stderr = run_into_closed_pipe(*command)
    assert stderr == ""
    assert code == SIGPIPE_STATUS


def test_listen_print_into_a_closed_pipe_stops_quietly(subscriptions) -> None:
    events = "".join(
        json.dumps({"id": f"e{i}", "type": "VM.START", "created": "2026-11-25T10:00:00Z"}) + "\n"
        for i in range(2000)
    )
    code, stderr = run_into_closed_pipe("listen", "--source", "stdin", "--print", "--dry-run",
                                        input=events)  # fmt: skip
    assert "RuntimeWarning" not in stderr and "rror" not in stderr, stderr
    assert code == SIGPIPE_STATUS
