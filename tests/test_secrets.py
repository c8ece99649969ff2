"""Secrets never appear in logs at any verbosity, in --json output, in error messages, or
in exceptions shown with -v."""

from __future__ import annotations

import json
import os

import pytest
from helpers import run_process
from receivers import Answer, Receiver, closed_port

SECRETS = [
    "hunter2pass",
    "whsec_c2VjcmV0LWtleS1ieXRlcy0xMjM0NTY3OA==",
    "cs-secret-key-42",
    "brokerpw",
]


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked:\n{text}"


@pytest.mark.parametrize("verbosity", [[], ["-v"], ["-vv"]])
def test_no_secret_in_any_output(verbosity: list[str], tmp_path) -> None:
    env = {**os.environ, "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "cs-secret-key-42",
           "CSNOTIFY_AMQP_URL": f"amqp://guest:brokerpw@127.0.0.1:{closed_port()}/",
           "CSNOTIFY_DELIVERY_RETRY_SCHEDULE": "0s"}  # fmt: skip
    with Receiver(lambda _r: Answer(500, b"nope")) as rx:
        failing = rx.url.replace("http://", "http://user:hunter2pass@") + "/hook"
        dead = f"http://user:hunter2pass@127.0.0.1:{closed_port()}/x"
        outputs = []
        for args in (
            ["subscribe", "*", "--to", failing, "--to", dead, "--key", SECRETS[1], "--name", "s", "--json"],
            ["list", "--json"], ["show", "s"], ["show", "s", "--json"], ["status", "--json"],
            ["config", "show"], ["config", "show", "--json"], ["export"],
            ["test", "s"], ["test", "s", "--json"], ["deliveries", "--json"], ["deliveries"],
            ["subscribe", "*", "--to", "nosuch://user:hunter2pass@x/"],  # an error message
            ["listen", "--source", "amqp", "--once"],  # an error naming the broker URL
        ):  # fmt: skip
            r = run_process(*verbosity, *args, env=env)
            outputs.append(r.stdout + r.stderr)
        events = json.dumps(
            {"id": "e1", "type": "VM.START", "created": "2026-11-25T10:00:00Z", "source": "stdin"}
        )
        r = run_process(*verbosity, "dispatch", "-", "--json", input=events, env=env)
        outputs.append(r.stdout + r.stderr)
        r = run_process(
            *verbosity, "listen", "--source", "stdin", "--log-format", "json", input=events, env=env
        )
        outputs.append(r.stdout + r.stderr)
    assert len(rx.requests) >= 2  # the failing endpoint was really tried
    for text in outputs:
        assert_clean(text)
    assert "user:********@" in "".join(outputs)
