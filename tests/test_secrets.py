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
            ["disable", "s", "--endpoint", dead], ["enable", "s", "--endpoint", dead],
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


# Apprise URIs whose private parts (as Apprise marks them) must never be shown.
APPRISE_SECRETS = {
    "smseagle://eagletoken0042@127.0.0.1:9/+15551230000": ["eagletoken0042"],
    "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general": [
        "T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7FQ"],
    "workflows://prod-00.westus.logic.azure.com:443/wf0123456789abcdef/sigXYZsecret123": [
        "wf0123456789abcdef", "sigXYZsecret123"],
    "tgram://123456789:ABCdefGhIJKlmNoPQRsTUVwxyZ/12345": ["ABCdefGhIJKlmNoPQRsTUVwxyZ"],
}  # fmt: skip


def test_private_parts_of_apprise_uris_are_masked_everywhere(cli, tmp_path) -> None:
    args = [a for uri in APPRISE_SECRETS for a in ("--to", uri)]
    r = cli("subscribe", "*", *args, "--name", "chat", "--json")
    assert r.exit_code == 0, r.stderr
    cli("config", "set", "failures.notify", next(iter(APPRISE_SECRETS)))
    outputs = {}
    for command in (["subscribe", "*", *args, "--name", "chat"], ["list"], ["list", "--json"],
                    ["show", "chat"], ["show", "chat", "--json"], ["status"], ["status", "--json"],
                    ["export"], ["export", "--format", "toml"], ["match", "VM.START"],
                    ["config", "show"], ["config", "show", "--json"]):  # fmt: skip
        r = cli(*command, expect=2 if command[0] == "subscribe" else 0)  # the name is taken
        outputs[" ".join(command)] = r.stdout + r.stderr
    for what, text in outputs.items():
        for secret in (s for secrets in APPRISE_SECRETS.values() for s in secrets):
            assert secret not in text, f"{secret!r} leaked by {what}:\n{text}"
    shown = [ep["uri"] for ep in cli("list", "--json").json()[0]["endpoints"]]
    assert shown == [
        "smseagle://********@127.0.0.1:9/+15551230000",
        "slack://********/********/********/#general",
        "workflows://prod-00.westus.logic.azure.com:443/********/********",
        "tgram://********/12345",
    ]
    # what list shows names the endpoint, and --reveal / --with-secrets give it back
    assert cli("disable", "chat", "--endpoint", shown[1]).exit_code == 0
    revealed = cli("show", "chat", "--json", "--reveal").json()["endpoints"]
    assert [ep["uri"] for ep in revealed] == list(APPRISE_SECRETS)
    assert [ep["enabled"] for ep in revealed] == [True, False, True, True]
    exported = cli("export", "--with-secrets").json()["subscriptions"][0]["endpoints"]
    assert [ep["uri"] for ep in exported] == list(APPRISE_SECRETS)
    # a masked export is refused on import
    masked = tmp_path / "masked.json"
    masked.write_text(cli("export").stdout)
    cli("unsubscribe", "chat", "--yes")
    r = cli("import", str(masked), expect=2)
    assert r.exit_code == 2 and "exported masked" in r.stderr


def test_the_broker_url_is_masked_without_apprise() -> None:
    """listen masks amqp.url in its log lines; that must not load Apprise (20 MB, 0.2 s)."""
    import subprocess
    import sys

    probe = (
        "import sys; from csnotify.redact import mask_uri;"
        " print(mask_uri('amqp://csnotify:s3cret@rabbit.example:5672/'), 'apprise' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["amqp://csnotify:********@rabbit.example:5672/", "False"]


UNPARSEABLE = {
    "subscribe --to": ("subscribe", "X.*", "--to", "https://u:pw5ecret@[::1/x", "--name", "t1"),
    "config set failures.notify": ("config", "set", "failures.notify", "http://u:pw5ecret@[::1"),
    "config set amqp.url": ("config", "set", "amqp.url", "amqp://u:pw5ecret@[::1"),
    "-c cloudstack.url": ("-c", "cloudstack.url=http://u:pw5ecret@[::1?apikey=k3y", "events"),
}


@pytest.mark.parametrize("case", UNPARSEABLE, ids=UNPARSEABLE.keys())
def test_a_url_that_does_not_parse_is_still_masked(cli, case: str) -> None:
    r = cli(*UNPARSEABLE[case], expect=2)
    assert r.exit_code == 2
    assert "not a valid URL" in r.stderr
    assert "pw5ecret" not in r.stderr + r.stdout and "k3y" not in r.stderr + r.stdout
    assert "u:********@" in r.stderr
