"""The attacks of the security review (issue 18), each reproduced through the real CLI and
shown refused or contained."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import run_process
from receivers import Answer, Receiver
from services import bus  # noqa: F401 - fixture

from csnotify.signing import standard_signature

BODY = b'{"event":{"type":"VM.START"},"subscription":"s"}'


def signed(key: str, msg_id: str = "msg_1", at: int | None = None) -> list[str]:
    stamp = int(time.time()) if at is None else at
    signature = standard_signature(key, msg_id, stamp, BODY)
    return ["-H", f"webhook-id: {msg_id}", "-H", f"webhook-timestamp: {stamp}",
            "-H", f"webhook-signature: {signature}"]  # fmt: skip


# -- 1. verify fails closed -----------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "whsec_", " padded ", "whsec_!!notbase64"])
def test_verify_refuses_a_key_that_cannot_verify(cli, key: str) -> None:
    """A signature made with an empty HMAC key (anyone can make one) is not accepted
    when the receiver's key variable is unset: the key is refused, exit 2."""
    forged = signed("whsec_") if key.startswith("whsec_") else signed("x")
    forged[-1] = "webhook-signature: v1," + base64.b64encode(
        hmac.new(b"", b"msg_1." + forged[3].split(": ")[1].encode() + b"." + BODY,
                 hashlib.sha256).digest()).decode()  # fmt: skip
    r = cli("verify", "--key", key, *forged, "-", input=BODY, expect=2)
    assert r.exit_code == 2, r.stdout + r.stderr
    assert "key" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "valid" not in r.stdout
    assert "--key generate" not in r.stderr  # subscribe's hint, not verify's


def test_verify_refuses_a_header_that_is_not_name_colon_value(cli) -> None:
    r = cli("verify", "--key", "k", *signed("k"), "-H", "nocolon", "-", input=BODY, expect=2)
    assert "-H 'nocolon': give a header as 'Name: value'" in r.stderr


def test_verify_without_any_key_is_usage_error(cli) -> None:
    r = cli("verify", *signed("k"), "-", input=BODY, env={"CSNOTIFY_VERIFY_KEY": ""}, expect=2)
    assert r.exit_code == 2 and "--key-file" in r.stderr


def test_verify_key_file(cli, tmp_path: Path) -> None:
    key_file = tmp_path / "hook.key"
    key_file.write_text("plain-key-1\n")
    r = cli("verify", "--key-file", str(key_file), *signed("plain-key-1"), "-", input=BODY)
    assert r.exit_code == 0, r.stderr
    key_file.write_text("\n")
    r = cli(
        "verify", "--key-file", str(key_file), *signed("plain-key-1"), "-", input=BODY, expect=2
    )
    assert r.exit_code == 2
    r = cli("verify", "--key-file", str(tmp_path / "none"), *signed("k"), "-", input=BODY, expect=2)
    assert r.exit_code == 2 and "cannot read --key-file" in r.stderr
    r = cli("verify", "--key", "k", "--key-file", str(key_file), "-", input=BODY, expect=2)
    assert r.exit_code == 2 and "not both" in r.stderr


def test_x_cs_signature_only_with_scheme_cloudstack(cli) -> None:
    """With a plain key, a captured delivery's body signed CloudStack-style (HMAC of the
    body alone, no timestamp) would verify forever: it is checked only when asked."""
    key = "plain-key-1"
    cs = base64.b64encode(hmac.new(key.encode(), BODY, hashlib.sha256).digest()).decode()
    r = cli("verify", "--key", key, "-H", f"X-CS-Signature: {cs}", "-", input=BODY, expect=1)
    assert r.exit_code == 1 and "--scheme cloudstack" in r.stderr
    r = cli("verify", "--key", key, "--scheme", "cloudstack", "-H", f"X-CS-Signature: {cs}",
            "-", input=BODY)  # fmt: skip
    assert r.exit_code == 0 and "valid cloudstack" in r.stdout
    r = cli(
        "verify", "--key", key, "--scheme", "cloudstack", *signed(key), "-", input=BODY, expect=1
    )
    assert r.exit_code == 1 and "no X-CS-Signature" in r.stderr
    r = cli("verify", "--key", key, "--scheme", "bogus", *signed(key), "-", input=BODY, expect=2)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("tolerance", ["inf", "nan", "-1"])
def test_verify_refuses_a_non_finite_tolerance(cli, tolerance: str) -> None:
    r = cli("verify", "--key", "k", "--tolerance", tolerance, *signed("k", at=1000), "-",
            input=BODY, expect=2)  # fmt: skip
    assert r.exit_code == 2 and "--tolerance" in r.stderr


@pytest.mark.parametrize("stamp", ["١٧٣٢٥٣٠٠٠٠", "+1732530000", "17.5", "1" * 13, "1_000"])
def test_verify_timestamp_is_ascii_digits(cli, stamp: str) -> None:
    args = signed("k")
    args[3] = f"webhook-timestamp: {stamp}"
    r = cli("verify", "--key", "k", "--tolerance", "0", *args, "-", input=BODY, expect=1)
    assert r.exit_code == 1 and "webhook-timestamp" in r.stderr


def test_verify_non_ascii_signature_is_invalid_not_a_crash(cli) -> None:
    args = signed("k")
    args[5] = "webhook-signature: v1,é" + "A" * 43
    r = cli("verify", "--key", "k", *args, "-", input=BODY, expect=1)
    assert r.exit_code == 1 and "does not match" in r.stderr
    r = cli("verify", "--key", "k", "--scheme", "cloudstack", "-H", "X-CS-Signature: é",
            "-", input=BODY, expect=1)  # fmt: skip
    assert r.exit_code == 1 and "does not match" in r.stderr


def test_verify_seen_refuses_a_replay(cli, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    r = cli("verify", "--key", "k", "--seen", str(seen), *signed("k", "msg_a"), "-", input=BODY)
    assert r.exit_code == 0, r.stderr
    r = cli("verify", "--key", "k", "--seen", str(seen), *signed("k", "msg_b"), "-", input=BODY)
    assert r.exit_code == 0, r.stderr
    r = cli(
        "verify",
        "--key",
        "k",
        "--seen",
        str(seen),
        *signed("k", "msg_a"),
        "-",
        input=BODY,
        expect=1,
    )
    assert r.exit_code == 1 and "already verified" in r.stderr
    assert seen.stat().st_mode & 0o077 == 0
    # an invalid delivery is not recorded
    r = cli("verify", "--key", "other", "--seen", str(seen), *signed("k", "msg_c"), "-",
            input=BODY, expect=1)  # fmt: skip
    assert r.exit_code == 1 and "msg_c" not in seen.read_text()
    r = cli("verify", "--key", "k", "--seen", str(tmp_path / "no" / "dir"), *signed("k"), "-",
            input=BODY, expect=2)  # fmt: skip
    assert r.exit_code == 2 and "--seen" in r.stderr


def test_verify_headers_that_are_not_utf8_are_invalid_not_a_crash(cli, tmp_path: Path) -> None:
    """An undecodable byte in a header (from argv, or a --headers file) is a header that
    does not verify: exit 1, not an internal error."""
    args = signed("k")
    args[1] = "webhook-id: \udcff"  # how Python hands over the byte 0xff in argv
    r = cli("verify", "--key", "k", *args, "-", input=BODY, expect=1)
    assert r.exit_code == 1 and "webhook-id header is not UTF-8 text" in r.stderr, r.stderr
    headers = tmp_path / "headers"
    headers.write_bytes(b"webhook-id: msg_1\nwebhook-timestamp: 1\nwebhook-signature: v1,\xff\n")
    r = cli("verify", "--key", "k", "--headers", str(headers), "-", input=BODY, expect=1)
    assert r.exit_code == 1 and "webhook-signature header is not UTF-8 text" in r.stderr


def test_verify_seen_file_that_is_not_utf8_still_refuses_replays(cli, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    seen.write_bytes(b"garbage\n\xff\xfe\n")
    r = cli("verify", "--key", "k", "--seen", str(seen), *signed("k", "msg_a"), "-", input=BODY)
    assert r.exit_code == 0, r.stderr
    r = cli("verify", "--key", "k", "--seen", str(seen), *signed("k", "msg_a"), "-", input=BODY,
            expect=1)  # fmt: skip
    assert r.exit_code == 1 and "already verified" in r.stderr


def test_verify_seen_is_refused_with_scheme_cloudstack(cli, tmp_path: Path) -> None:
    """X-CS-Signature signs the body alone: its X-CS-Event-ID is not signed, so --seen
    keyed on it let a captured delivery be replayed with another id. Refused, exit 2."""
    key = "plain-key-1"
    cs = base64.b64encode(hmac.new(key.encode(), BODY, hashlib.sha256).digest()).decode()
    seen = tmp_path / "seen"
    for event_id in ("1", "2"):
        r = cli("verify", "--key", key, "--scheme", "cloudstack", "--seen", str(seen),
                "-H", f"X-CS-Signature: {cs}", "-H", f"X-CS-Event-ID: {event_id}", "-",
                input=BODY, expect=2)  # fmt: skip
        assert r.exit_code == 2 and "--seen needs Standard Webhooks" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "valid" not in r.stdout
    assert not seen.exists()


# -- 2. cmd: programs get no secrets, no descriptors, a bounded stderr ------------------------

ENV_PROBE = """#!{python}
import json, os, sys
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
sys.stdin.read()
with open(sys.argv[1], "w") as fh:
    json.dump({{"env": dict(os.environ), "fd_open": is_open(int(sys.argv[2]))}}, fh)
"""
EVENT = '{"id": "e1", "type": "VM.START", "created": "2026-11-25T10:00:00Z"}\n'


def program(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_cmd_program_gets_a_minimal_environment_and_no_inherited_descriptor(tmp_path) -> None:
    """csnotify runs (as under systemd) with secrets in its environment and a descriptor
    its parent left open; the program sees neither, only the basic variables, the event's,
    and what delivery.command_env names."""
    out = tmp_path / "probe.json"
    leaked = (tmp_path / "leaked").open("w")  # inheritable once passed to the child
    fd = leaked.fileno()
    probe = program(tmp_path, "probe", ENV_PROBE.format(python=sys.executable))
    env = {**os.environ, "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "cs-secret-key-42",
           "CSNOTIFY_AMQP_URL": "amqp://guest:brokerpw@127.0.0.1:1/", "LDAP_BIND_PW": "pw1",
           "HTTPS_PROXY": "http://proxy.example:3128", "TZ": "UTC",
           "CSNOTIFY_DELIVERY_COMMAND_ENV": "HTTPS_PROXY"}  # fmt: skip
    r = run_process("subscribe", "*", "--to", f"cmd:{probe} {out} {fd}", "--name", "p", env=env)
    assert r.exit_code == 0, r.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "csnotify", "dispatch", "-"], input=EVENT, text=True,
        capture_output=True, env=env, pass_fds=(fd,), timeout=60, check=False,
    )  # fmt: skip
    leaked.close()
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(out.read_text())
    assert seen["fd_open"] is False
    assert set(seen["env"]) <= {"PATH", "HOME", "LANG", "TZ", "HTTPS_PROXY", "LC_CTYPE",
                                "CSNOTIFY_EVENT_TYPE", "CSNOTIFY_EVENT_ID",
                                "CSNOTIFY_SUBSCRIPTION"}, seen["env"]  # fmt: skip
    assert seen["env"]["HTTPS_PROXY"] == "http://proxy.example:3128"
    assert seen["env"]["CSNOTIFY_EVENT_TYPE"] == "VM.START" and seen["env"]["TZ"] == "UTC"
    r = run_process("-c", "delivery.command_env=HTTPS_PROXY,no-such=1", "status", env=env)
    assert r.exit_code == 2 and "not an environment variable name" in r.stderr


def test_cmd_program_must_be_an_absolute_path(cli, tmp_path: Path) -> None:
    """A bare name would be looked up on PATH at every delivery."""
    for uri in ("cmd:tee -a /tmp/x", "cmd:./hook", "cmd:~/hook"):
        r = cli("subscribe", "*", "--to", uri, "--name", "bare", expect=2)
        assert r.exit_code == 2 and "absolute path" in r.stderr, r.stderr
    assert cli("list", "--json").json() == []


def test_a_stored_bare_program_name_is_not_looked_up_on_path(cli, tmp_path, db_file) -> None:
    """A store written by hand or by an older csnotify may hold cmd:hook: delivery
    refuses it (not retried) rather than running whatever hook PATH finds first."""
    import sqlite3

    bindir = tmp_path / "bin"
    bindir.mkdir()
    ran = tmp_path / "ran"
    hook = program(bindir, "hook", f"#!/bin/sh\ncat >/dev/null\ntouch {ran}\n")
    assert cli("subscribe", "*", "--to", f"cmd:{hook}", "--name", "bare").exit_code == 0
    with sqlite3.connect(db_file) as db:
        db.execute("UPDATE endpoints SET uri = 'cmd:hook'")
    db.close()
    path = f"{bindir}:{os.environ['PATH']}"
    r = cli("dispatch", "-", input=EVENT, env={"PATH": path}, expect=1)
    assert r.exit_code == 1 and not ran.exists()
    (row,) = cli("deliveries", "bare", "--json").json()
    assert row["error"] == "hook is not an absolute path to an executable file", row
    assert row["attempts"] == 1  # not retried


def test_cmd_stderr_flood_keeps_only_its_tail(tmp_path: Path) -> None:
    """200 MB on stderr: the error holds its tail and csnotify's memory stays flat."""
    flood = program(tmp_path, "flood", (
        f"#!{sys.executable}\nimport sys\nblock = b'x' * 1048576\n"
        "for _ in range(200):\n    sys.stderr.buffer.write(block)\n"
        "sys.stderr.write('the real reason')\nsys.exit(4)\n"
    ))  # fmt: skip
    assert run_process("subscribe", "*", "--to", f"cmd:{flood}", "--name", "f").exit_code == 0
    # Measured from a small parent: a child's peak RSS counts the pages it shares with its
    # parent between fork and exec, and pytest's own grow with the suite.
    measure = (
        "import os, subprocess, sys\n"
        "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE,"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "p.stdin.write(sys.stdin.buffer.read()); p.stdin.close()\n"
        "_, status, usage = os.wait4(p.pid, 0)\n"
        "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n"
    )
    command = [
        sys.executable,
        "-m",
        "csnotify",
        "-c",
        "delivery.retry_schedule=0s",
        "dispatch",
        "-",
    ]
    out = subprocess.run([sys.executable, "-c", measure, *command], input=EVENT, text=True,
                         capture_output=True, timeout=120, check=True).stdout  # fmt: skip
    status, max_rss_kib = (int(word) for word in out.split())
    assert status == 1
    assert max_rss_kib < 150 * 1024, max_rss_kib  # far below the 200 MB sent
    rows = run_process("deliveries", "f", "--json").json()
    assert rows[0]["error"].endswith("the real reason")
    assert rows[0]["error"].startswith(f"{flood}: exit status 4")


def test_a_background_child_holding_stderr_does_not_turn_success_into_timeout(
    cli, tmp_path: Path
) -> None:
    quick = program(tmp_path, "quick", "#!/bin/sh\ncat >/dev/null\nsleep 4 &\nexit 0\n")
    subscribe_ok = cli("subscribe", "*", "--to", f"cmd:{quick}", "--name", "q")
    assert subscribe_ok.exit_code == 0, subscribe_ok.stderr
    started = time.monotonic()
    r = cli("-c", "delivery.timeout=2", "-c", "delivery.retry_schedule=0s", "dispatch", "-",
            input=EVENT)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert time.monotonic() - started < 2
    assert cli("deliveries", "q", "--json").json()[0]["status"] == "delivered"


def test_a_program_that_exits_0_without_reading_its_input_is_delivered(cli) -> None:
    """The counterpart of test_delivery.py's /bin/false: writing 200 KB to a program that
    has exited meets a closed pipe (RuntimeError under uvloop); its exit status 0 decides."""
    true = shutil.which("true") or "/bin/true"
    assert cli("subscribe", "*", "--to", f"cmd:{true}", "--name", "yes").exit_code == 0
    event = {"id": "b1", "type": "VM.START", "created": "2026-11-25T10:00:00Z",
             "description": "x" * 200_000}  # fmt: skip
    r = cli("-c", "delivery.retry_schedule=0s", "dispatch", "-", input=json.dumps(event))
    assert r.exit_code == 0, r.stderr
    rows = cli("deliveries", "yes", "--json").json()
    assert [(row["status"], row["error"]) for row in rows] == [("delivered", None)]


# -- 3. no vanishing deliveries ---------------------------------------------------------------


def test_a_channel_that_raises_is_a_recorded_counted_failure(cli, db_file: Path) -> None:
    """A channel that raises (here: a cmd: endpoint whose line cannot be split, as a
    store written by hand or by an older csnotify may hold) ends every attempt as a
    recorded failure with the error, counted toward failures.disable_after, in dispatch,
    listen and test alike; nothing vanishes."""
    import sqlite3

    true = shutil.which("true") or "/bin/true"
    assert cli("subscribe", "*", "--to", f"cmd:{true}", "--name", "broken").exit_code == 0
    with sqlite3.connect(db_file) as db:
        db.execute("UPDATE endpoints SET uri = ?", (f"cmd:{true} 'unclosed",))
    db.close()
    settings = ["-c", "delivery.retry_schedule=0s", "-c", "failures.disable_after=3"]
    events = "".join(EVENT.replace("e1", f"e{i}") for i in range(2))
    r = cli(*settings, "dispatch", "-", "--json", input=events, expect=1)
    assert r.json()["failed"] == 2, r.stdout
    r = cli(*settings, "listen", "--source", "stdin", input=EVENT.replace("e1", "e9"), expect=None)
    rows = cli("deliveries", "broken", "--json").json()
    assert sorted(row["event_id"] for row in rows) == ["e0", "e1", "e9"]
    assert all(row["status"] == "failed" for row in rows)
    assert all(row["error"].startswith("internal error: BadInput") for row in rows), rows
    endpoint = cli("show", "broken", "--json").json()["endpoints"][0]
    assert endpoint["total_failures"] == 3 and endpoint["enabled"] is False, endpoint
    r = cli("test", "broken", "--json", expect=1)
    assert r.exit_code == 1 and "internal error: BadInput" in r.stdout, r.stdout


def test_cr_lf_in_a_header_bound_field_is_cleaned_and_delivered(cli) -> None:
    """--format cloudstack puts the event's id in X-CS-Event-ID and its type in
    X-CS-Event: a CR/LF there once made the channel raise, and the event vanished."""
    event = {"id": "e1\r\nX-Injected: 1", "type": "VM.START", "created": "2026-11-25T10:00:00Z",
             "account": "adm", "description": "d"}  # fmt: skip
    with Receiver() as rx:
        r = cli("subscribe", "*", "--to", rx.url, "--format", "cloudstack", "--key", "k",
                "--name", "cs")  # fmt: skip
        assert r.exit_code == 0, r.stderr
        r = cli("dispatch", "-", "--json", input=json.dumps(event))
        assert r.exit_code == 0, r.stderr
        r = cli("test", "cs")
        assert r.exit_code == 0, r.stdout + r.stderr
    assert len(rx.requests) == 2
    headers = {k.lower(): v for k, v in rx.requests[0].headers.items()}
    assert "x-injected" not in headers
    assert headers["x-cs-event-id"] == "e1  X-Injected: 1"  # the line break made spaces
    rows = cli("deliveries", "cs", "--json").json()
    assert [row["status"] for row in rows] == ["delivered"]


@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_rejected_on_input(cli, number: str) -> None:
    """Python reads them, but they are not JSON: a receiver would get 'Infinity' in the
    body. The event is refused, counted and reported; the others go on."""
    bad = '{"id": "e1", "type": "VM.START", "created": "2026-11-25T10:00:00Z", "raw": {"n": %s}}'
    good = '{"id": "e2", "type": "VM.START", "created": "2026-11-25T10:00:00Z"}'
    with Receiver() as rx:
        assert cli("subscribe", "*", "--to", rx.url, "--name", "s").exit_code == 0
        r = cli("dispatch", "-", "--json", input=bad % number + "\n" + good + "\n", expect=1)
        assert r.exit_code == 1
        assert r.json()["rejected"][0].startswith("line 1: invalid JSON")
        r = cli("dispatch", "-", "--json", input=bad % number, expect=1)  # one document
        assert r.exit_code == 1 and r.json()["rejected"][0].startswith("line 1: invalid JSON")
        r = cli("listen", "--source", "stdin", input=bad % number + "\n", expect=1)
        assert r.exit_code == 1 and "line 1: invalid JSON" in r.stderr
    assert [b["event"]["id"] for b in rx.bodies()] == ["e2"]
    assert all(b"Infinity" not in q.body and b"NaN" not in q.body for q in rx.requests)


@pytest.mark.parametrize(
    "args",
    [["listen", "--source", "api", "--interval", "nan"], ["listen", "--duration", "inf"],
     ["status", "--watch", "--interval", "nan"], ["demo", "--duration", "nan"],
     ["demo", "--rate", "inf"]],
)  # fmt: skip
def test_non_finite_seconds_and_rates_are_refused(cli, args: list[str], db_file: Path) -> None:
    """click's min= lets NaN through (no comparison with it is true): listen --source api
    --interval nan polled, then died with an internal error. One line, exit 2, nothing
    written."""
    r = cli(*args, expect=2)
    assert r.exit_code == 2 and "is not a finite number" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not db_file.exists()


# -- 7. output and logs cannot be forged ------------------------------------------------------


def test_a_log_record_is_one_line(cli) -> None:
    """An event id with a line break once printed a second, forged record."""
    event = {"id": "e1\ncsnotify: error: forged record", "type": "VM.START",
             "created": "2026-11-25T10:00:00Z"}  # fmt: skip
    with Receiver(lambda _r: Answer(500, b"no\nsuch: thing")) as rx:
        assert cli("subscribe", "*", "--to", rx.url, "--name", "s").exit_code == 0
        r = cli(
            "-c", "delivery.retry_schedule=0s", "dispatch", "-", input=json.dumps(event), expect=1
        )
        assert r.exit_code == 1
    lines = r.stderr.splitlines()
    assert any("e1\\ncsnotify: error: forged record" in line for line in lines), r.stderr
    assert not any(line.startswith("csnotify: error: forged") for line in lines)


def test_table_cells_are_text_not_markup(tmp_path: Path) -> None:
    """On a terminal, tables are rich tables: a program's (or receiver's) [link=...] in
    the error column must be shown as it is, not become a clickable link (OSC 8)."""
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "250"}
    env.pop("NO_COLOR", None)
    markup = "[link=https://evil.example/]click[/link]"
    hook = program(tmp_path, "hook", f"#!/bin/sh\necho '{markup}' >&2\nexit 1\n")
    assert (
        run_process("subscribe", "*", "--to", f"cmd:{hook}", "--name", "s", env=env).exit_code == 0
    )
    r = run_process("-c", "delivery.retry_schedule=0s", "dispatch", "-", input=EVENT, env=env)
    assert r.exit_code == 1
    shown = subprocess.run(
        ["script", "-qec", f"{sys.executable} -m csnotify deliveries s", "/dev/null"],
        capture_output=True, env=env, timeout=60, check=False,
    ).stdout  # fmt: skip
    assert "│".encode() in shown  # a rich table, as on a terminal
    assert b"\x1b]8;" not in shown  # no hyperlink escape
    assert markup.encode() in shown


# -- 4. secrets are not shown -----------------------------------------------------------------

PATH_TOKEN = "abcDEF123ghiJKL456mnoPQR"
QUERY_SECRET = "q9secretvalue"
CMD_PASSWORD = "cmdPa55word"


def test_path_tokens_query_values_and_command_credentials_are_masked(cli, tmp_path) -> None:
    hook = program(tmp_path, "hook", "#!/bin/sh\ncat >/dev/null\n")
    mysql = program(tmp_path, "mysql", "#!/bin/sh\ncat >/dev/null\n")
    with Receiver(lambda _r: Answer(500, b"nope")) as rx:
        uris = [f"{rx.url}/services/T0A1B2C3D/B0A1B2C3D/{PATH_TOKEN}",
                f"cmd:{mysql} -h db -uadmin -p{CMD_PASSWORD}t -P 3306 cmdb",
                f"{rx.url}/hook?code={QUERY_SECRET}&to=ops",
                f"cmd:{hook} -u admin:{CMD_PASSWORD} --token={CMD_PASSWORD}x"
                f" --password {CMD_PASSWORD}y API_KEY={CMD_PASSWORD}z",
                f"cmd:{hook} --user=admin:{CMD_PASSWORD}w -H 'Authorization: Bearer"
                f" {CMD_PASSWORD}v' -H 'X-Api-Key:{CMD_PASSWORD}u' -H 'Accept: text/plain'"]  # fmt: skip
        args = [a for uri in uris for a in ("--to", uri)]
        r = cli("subscribe", "*", *args, "--name", "s")
        assert r.exit_code == 0, r.stderr
        cli("-c", "delivery.retry_schedule=0s", "dispatch", "-", input=EVENT, expect=1)
    outputs = [cli(*c) for c in (["list"], ["list", "--json"], ["show", "s"], ["show", "s", "--json"],
               ["export"], ["match", "VM.START"], ["deliveries"], ["deliveries", "--json"],
               ["status", "--json"])]  # fmt: skip
    text = "".join(r.stdout + r.stderr for r in outputs)
    for secret in (PATH_TOKEN, QUERY_SECRET, CMD_PASSWORD):
        assert secret not in text
    assert "to=ops" in text and "-u admin:********" in text and "/B0A1B2C3D/********" in text
    assert "--user=admin:********" in text and "'Authorization: ********'" in text
    assert "X-Api-Key:********" in text and "'Accept: text/plain'" in text
    assert "-uadmin -p******** -P 3306 cmdb" in text  # mysql's glued password
    revealed = cli("show", "s", "--reveal", "--json").stdout
    assert PATH_TOKEN in revealed and CMD_PASSWORD in revealed  # asked for


def test_userinfo_of_the_cloudstack_url_is_masked_in_errors_and_logs(tmp_path) -> None:
    env = {**os.environ, "CSNOTIFY_CLOUDSTACK_URL": "http://admin:urlpw42@127.0.0.1:9/client/api",
           "CSNOTIFY_CLOUDSTACK_API_KEY": "a", "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "b"}  # fmt: skip
    for args in (["-v", "events"], ["listen", "--source", "api", "--once", "--log-format", "json"]):
        r = run_process(*args, env=env)
        assert r.exit_code == 3, r.stderr
        assert "urlpw42" not in r.stdout + r.stderr
        assert "admin:********@127.0.0.1" in r.stderr


def test_endpoints_from_stdin_or_a_file_stay_out_of_argv(cli, tmp_path: Path) -> None:
    secret_uri = "mailto://user:mailpw77@smtp.example?to=ops@example"
    r = cli(
        "subscribe", "*", "--to", "-", "--name", "a", input=f"# the on-call mailbox\n{secret_uri}\n"
    )
    assert r.exit_code == 0, r.stderr
    uris = tmp_path / "uris"
    uris.write_text(f"{secret_uri}\n\nhttps://hooks.example/cs\n")
    r = cli("subscribe", "*", "--to-file", str(uris), "--name", "b")
    assert r.exit_code == 0, r.stderr
    shown = {s["name"]: s for s in cli("list", "--json", "--reveal").json()}
    assert [e["uri"] for e in shown["a"]["endpoints"]] == [secret_uri]
    assert len(shown["b"]["endpoints"]) == 2
    for bad, message in (
        (["--to-file", str(tmp_path / "none")], "cannot read --to-file"),
        (["--to", "-"], "no URI"),
        ([], "give an endpoint"),
        (["--to", "-", "--key", "-"], "both read stdin"),
    ):
        r = cli("subscribe", "*", *bad, "--name", "c", input="\n# nothing\n", expect=2)
        assert r.exit_code == 2 and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert "c" not in {s["name"] for s in cli("list", "--json").json()}
    r = cli("update", "b", "--to", "-", input="https://hooks.example/new\n")
    assert r.exit_code == 0, r.stderr
    assert [e["uri"] for e in cli("show", "b", "--json").json()["endpoints"]] == [
        "https://hooks.example/new"
    ]
    r = cli("update", "b", "--to-file", str(uris))
    assert r.exit_code == 0 and len(cli("show", "b", "--json").json()["endpoints"]) == 2
    # an endpoint added with its password kept out of argv (it was "--to '-': not an URI")
    r = cli("update", "b", "--add-to", "-", input="https://u:addedpw@hooks.example/more\n")
    assert r.exit_code == 0, r.stderr
    assert len(cli("show", "b", "--json").json()["endpoints"]) == 3
    r = cli("update", "b", "--add-to", "-", "--key", "-", input="x\n", expect=2)
    assert "--key - and --add-to - both read stdin" in r.stderr


def test_a_secret_given_with_dash_c_is_warned_about(cli) -> None:
    r = cli("-c", "cloudstack.secret_key=sk1", "config", "show")
    assert r.exit_code == 0 and "ps and shell history" in r.stderr
    assert "$CSNOTIFY_CLOUDSTACK_SECRET_KEY" in r.stderr
    r = cli("-c", "amqp.url=amqp://127.0.0.1/", "-c", "delivery.timeout=3", "config", "show")
    assert r.exit_code == 0 and "ps and shell history" not in r.stderr  # no secret in it


def test_a_secret_given_to_config_set_in_argv_is_warned_about(cli, config_file: Path) -> None:
    """config set with the value in argv stores it (as asked) and says how to keep it out
    of ps next time; from stdin, or a setting with no secret in it, says nothing."""
    r = cli("config", "set", "cloudstack.secret_key", "sk1")
    assert "ps and shell history" in r.stderr and "config set cloudstack.secret_key -" in r.stderr
    assert "sk1" not in r.stdout + r.stderr
    r = cli("config", "set", "amqp.url", "amqp://guest:brokerpw@127.0.0.1/")
    assert "ps and shell history" in r.stderr and "brokerpw" not in r.stdout + r.stderr
    for args, given in ((["cloudstack.secret_key", "-"], "sk2\n"),
                        (["amqp.url", "amqp://127.0.0.1/"], None),
                        (["delivery.timeout", "5"], None)):  # fmt: skip
        r = cli("config", "set", *args, input=given)
        assert r.stderr == "", r.stderr
    assert "sk2" in config_file.read_text()


def test_export_with_secrets_to_a_readable_file_warns(tmp_path: Path) -> None:
    assert run_process("subscribe", "*", "--to", "https://hooks.example/cs", "--key", "k1",
                       "--name", "s").exit_code == 0  # fmt: skip
    for mode, warned in ((0o644, True), (0o600, False)):
        target = tmp_path / f"export-{mode:o}.json"
        target.touch(mode)
        target.chmod(mode)
        with target.open("w") as out:
            proc = subprocess.run([sys.executable, "-m", "csnotify", "export", "--with-secrets"],
                                  stdout=out, stderr=subprocess.PIPE, text=True, check=False)  # fmt: skip
        assert proc.returncode == 0
        assert ("others can read (mode 0644)" in proc.stderr) is warned, proc.stderr
        assert '"key": "k1"' in target.read_text()


def test_a_loose_store_or_config_is_made_0600(cli, db_file: Path, config_file: Path) -> None:
    assert cli("config", "set", "delivery.timeout", "5").exit_code == 0
    assert cli("list").exit_code == 0
    for path in (db_file, config_file):
        path.chmod(0o644)
    for command, path in ((["list"], db_file), (["config", "show"], config_file)):
        r = cli(*command)
        assert r.exit_code == 0
        notices = [ln for ln in r.stderr.splitlines() if "had mode" in ln]
        assert notices == [
            f"csnotify: warning: {path} had mode 0644 (others could read its secrets); made it 0600"
        ]
        assert path.stat().st_mode & 0o777 == 0o600
        assert "had mode" not in cli(*command).stderr  # said once


# -- 5. limits on what an outsider controls ---------------------------------------------------


def test_template_width_and_precision_are_bounded(cli) -> None:
    started = time.monotonic()
    for template in ("{type:>400000000}", "{description:.99999999999999999999}", "{type:>1001}"):
        r = cli(
            "subscribe",
            "*",
            "--to",
            "json://127.0.0.1:9/",
            "--title",
            template,
            "--name",
            "t",
            expect=2,
        )
        assert r.exit_code == 2 and "more than 1000" in r.stderr, r.stderr
    assert time.monotonic() - started < 5  # refused before any 400 MB string is made
    r = cli("subscribe", "*", "--to", "json://127.0.0.1:9/", "--title", "{description:.1000}",
            "--name", "t")  # fmt: skip
    assert r.exit_code == 0, r.stderr


class HostileApi:
    """A spoofed CloudStack API (plain http): an endless answer, or endless full pages."""

    def __init__(self, mode: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                try:
                    if mode == "nan":
                        self.wfile.write(b'{"listeventsresponse": {"count": 1, "event": [{"id":'
                                         b' "e1", "type": "VM.START", "raw": NaN}]}}')  # fmt: skip
                        return
                    if mode == "huge":
                        self.wfile.write(b'{"listeventsresponse": {"count": 1, "event": [')
                        for _ in range(3 * 1024):  # 3 MB, and it would go on
                            self.wfile.write(b" " * 1024)
                        return
                    n = outer.requests
                    rows = [{"id": f"ev-{n}-{i}", "type": "VM.START", "level": "INFO",
                             "state": "Completed", "created": "2026-11-25T10:00:00+0000",
                             "description": "x"} for i in range(2)]  # fmt: skip
                    doc = {"listeventsresponse": {"count": 10**9, "event": rows}}
                    self.wfile.write(json.dumps(doc).encode())
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/client/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("mode", ["huge", "pages", "nan"])
def test_a_hostile_api_is_bounded(mode: str) -> None:
    api = HostileApi(mode)
    try:
        env = {**os.environ, "CSNOTIFY_CLOUDSTACK_URL": api.url, "CSNOTIFY_CLOUDSTACK_API_KEY": "a",
               "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "b", "CSNOTIFY_CLOUDSTACK_MAX_RESPONSE_MB": "1",
               "CSNOTIFY_CLOUDSTACK_MAX_PAGES": "20", "CSNOTIFY_CLOUDSTACK_PAGE_SIZE": "2",
               "CSNOTIFY_CLOUDSTACK_TIMEZONE": "UTC"}  # fmt: skip
        r = run_process("events", "--since", "2026-11-25T09:00:00Z", env=env)
        assert r.exit_code == 3, r.stdout + r.stderr
        if mode == "huge":
            assert "answered more than 1 MB (cloudstack.max_response_mb)" in r.stderr
        elif mode == "nan":  # NaN is not JSON: the answer is refused, nothing delivered
            assert "unexpected answer to listEvents (HTTP 200, not JSON)" in r.stderr, r.stderr
        else:
            assert "more than 20 pages" in r.stderr and api.requests <= 21
        # the poller reads through the same client: one poll is bounded the same way
        before = api.requests
        r = run_process("listen", "--source", "api", "--once", "--since",
                        "2026-11-25T09:00:00Z", env=env)  # fmt: skip
        assert r.exit_code == 3, r.stdout + r.stderr
        assert "cloudstack.max_response_mb" in r.stderr or mode != "huge", r.stderr
        assert "more than 20 pages" in r.stderr or mode != "pages", r.stderr
        assert api.requests - before <= 21
    finally:
        api.close()


def test_a_bus_message_over_max_message_bytes_is_rejected_and_acknowledged(bus) -> None:  # noqa: F811
    from helpers import load_fixture

    env = {**os.environ, **bus.env(), "CSNOTIFY_AMQP_MAX_MESSAGE_BYTES": "4096"}
    with Receiver() as rx:
        assert run_process("subscribe", "*", "--to", rx.url, env=env).exit_code == 0
        assert run_process("listen", "--source", "amqp", "--once", env=env).exit_code == 0
        good = load_fixture("amqp/ActionEvent.json")
        doc = json.loads(good["body_raw"])
        doc["description"] = "x" * 5000
        bus.publish(good["routing_key"], json.dumps(doc).encode())
        bus.publish(good["routing_key"], good["body_raw"].encode())
        r = run_process("listen", "--source", "amqp", "--once", env=env)
    assert r.exit_code == 0, r.stderr
    assert "more than amqp.max_message_bytes (4096)" in r.stderr
    assert len(rx.requests) == 1 and bus.queued() == 0
    r = run_process("status", "--json", env=env)
    assert r.json()["listeners"][-1]["rejected"] == 1


def test_a_bus_message_with_a_non_finite_number_is_rejected_and_acknowledged(bus) -> None:  # noqa: F811
    from helpers import load_fixture

    env = {**os.environ, **bus.env()}
    with Receiver() as rx:
        assert run_process("subscribe", "*", "--to", rx.url, env=env).exit_code == 0
        assert run_process("listen", "--source", "amqp", "--once", env=env).exit_code == 0
        good = load_fixture("amqp/ActionEvent.json")
        bad = good["body_raw"].rstrip()[:-1] + ', "csnotify_probe": 1e999}'
        bus.publish(good["routing_key"], bad.encode())
        bus.publish(good["routing_key"], good["body_raw"].encode())
        r = run_process("listen", "--source", "amqp", "--once", env=env)
    assert r.exit_code == 0, r.stderr
    assert "invalid JSON (the number 1e999 is too large)" in r.stderr, r.stderr
    assert len(rx.requests) == 1 and bus.queued() == 0
    assert b"Infinity" not in rx.requests[0].body
    assert run_process("status", "--json", env=env).json()["listeners"][-1]["rejected"] == 1


def test_the_delivery_log_keeps_a_bounded_payload(cli) -> None:
    event = {"id": "big", "type": "VM.START", "created": "2026-11-25T10:00:00Z",
             "description": "d" * 60_000, "raw": {"blob": "r" * 200_000}}  # fmt: skip
    with Receiver() as rx:
        assert cli("subscribe", "*", "--to", rx.url, "--name", "s").exit_code == 0
        assert cli("dispatch", "-", input=json.dumps(event)).exit_code == 0
        assert cli("redeliver", "s", "--since", "1h").exit_code == 0
    first, again = rx.bodies()
    assert len(first["event"]["raw"]["blob"]) == 200_000  # the receiver got it whole
    assert len(again["event"]["description"]) == 2000  # the log kept its start
    assert again["event"]["raw"] == {"csnotify_truncated": len(json.dumps(first["event"],
                                     separators=(",", ":"), ensure_ascii=False))}  # fmt: skip


# -- 6. an import cannot silently turn a webhook into a program -------------------------------


def test_import_replace_needs_allow_commands_for_new_programs(cli, tmp_path, db_file) -> None:
    from helpers import file_digest

    hook = program(tmp_path, "hook", "#!/bin/sh\ncat >/dev/null\n")
    assert cli("subscribe", "*", "--to", "https://hooks.example/cs", "--name", "s").exit_code == 0
    exported = tmp_path / "subs.json"
    assert cli("export", "--with-secrets", "-o", str(exported)).exit_code == 0
    doc = json.loads(exported.read_text())
    doc["subscriptions"][0]["endpoints"][0]["uri"] = f"cmd:{hook} --token=tok123secret"
    doc["subscriptions"].append({**doc["subscriptions"][0], "name": "t"})
    exported.write_text(json.dumps(doc))
    before = file_digest(db_file)
    for args in (["--replace"], []):
        r = cli("import", str(exported), *args, expect=2)
        assert r.exit_code == 2, r.stdout + r.stderr
        assert f"s: cmd:{hook} --token=********" in r.stderr or not args
        assert f"t: cmd:{hook} --token=********" in r.stderr and "--allow-commands" in r.stderr
        assert "tok123secret" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert file_digest(db_file) == before  # nothing written
    r = cli("import", str(exported), "--replace", "--allow-commands", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["replaced"] == ["s"] and r.json()["created"] == ["t"]
    again = cli("import", str(exported), "--replace", "--json")  # the same programs: no question
    assert again.exit_code == 0 and again.json()["unchanged"] == ["s", "t"]


def test_import_asks_on_a_terminal_before_new_programs(tmp_path: Path) -> None:
    """Without --allow-commands, an import at a terminal lists the programs and asks: no
    (or nothing) imports nothing, exit 2; yes imports them."""
    hook = program(tmp_path, "hook", "#!/bin/sh\ncat >/dev/null\n")
    doc = {"subscriptions": [{"name": "x", "patterns": ["*"],
                              "endpoints": [{"uri": f"cmd:{hook} --token=tok123secret"}]}]}  # fmt: skip
    exported = tmp_path / "subs.json"
    exported.write_text(json.dumps(doc))
    command = f"{sys.executable} -m csnotify import {exported}"
    for answer, status, names in (("n", 2, []), ("y", 0, ["x"])):
        # script gives the import a terminal; the answer is typed once the question is up
        typed = subprocess.Popen(["script", "-qec", command, "/dev/null"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        shown = b""
        assert typed.stdout is not None and typed.stdin is not None
        while b"[y/N]" not in shown:
            chunk = os.read(typed.stdout.fileno(), 4096)
            assert chunk, shown
            shown += chunk
        typed.stdin.write(f"{answer}\n".encode())
        typed.stdin.close()
        shown += typed.stdout.read()
        assert typed.wait(timeout=60) == status, shown
        assert f"new program: x: cmd:{hook} --token=********".encode() in shown
        assert b"tok123secret" not in shown
        listed = run_process("list", "--json").json()
        assert [s["name"] for s in listed] == names


def test_failures_notify_program_needs_allow_commands(cli, tmp_path, config_file) -> None:
    hook = program(tmp_path, "hook", "#!/bin/sh\ncat >/dev/null\n")
    r = cli("config", "set", "failures.notify", f"cmd:{hook}", expect=2)
    assert r.exit_code == 2 and "--allow-commands" in r.stderr
    assert not config_file.exists()
    r = cli("config", "set", "failures.notify", f"cmd:{hook}", "--allow-commands")
    assert r.exit_code == 0, r.stderr
    assert cli("config", "show", "--json").json()["failures.notify"] == f"cmd:{hook}"
    # a program line with arguments, as subscribe takes it (it was refused as "an URL");
    # no warning about argv when it holds no credential, one when it does
    line = f"cmd:{hook} -a /var/log/csnotify-off.jsonl"
    r = cli("config", "set", "failures.notify", line, "--allow-commands")
    assert "warning" not in r.stderr and cli("config", "show", "--json").json()[
        "failures.notify"] == line  # fmt: skip
    r = cli("config", "set", "failures.notify", f"cmd:{hook} -u bob:pw123", "--allow-commands")
    assert "warning: the value of failures.notify was given where ps" in r.stderr
    assert "pw123" not in r.stdout + r.stderr
    r = cli("-c", f"failures.notify=cmd:{hook} -a\x01", "config", "show", expect=2)
    assert "control character" in r.stderr


# -- 8. documented choices --------------------------------------------------------------------


def test_tls_verification_opt_outs_are_shown_as_a_warning(cli) -> None:
    r = cli("subscribe", "*", "--to", "json://127.0.0.1:9/?verify=no", "--to",
            "https://hooks.example/cs", "--name", "lax")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert (
        cli("subscribe", "*", "--to", "https://hooks.example/ok", "--name", "strict").exit_code == 0
    )
    listed = cli("list", env={"COLUMNS": "200"}).stdout
    assert "WARNING" in listed and "TLS not verified (verify=no)" in listed
    shown = cli("show", "lax", env={"COLUMNS": "250"}).stdout
    assert "WARNING" in shown and "TLS not verified (verify=no)" in shown
    assert "WARNING" not in cli("show", "strict", env={"COLUMNS": "250"}).stdout
    doc = {s["name"]: s for s in cli("list", "--json").json()}
    assert [e["warnings"] for e in doc["lax"]["endpoints"]] == [
        ["TLS not verified (verify=no)"], []]  # fmt: skip


@pytest.mark.parametrize(
    ("query", "warned"),
    [("verify=never", True), ("verify=disabled", True), ("verify=", True), ("verify=10", True),
     ("Verify=Off", True), ("verify=yes", False), ("verify=true", False), ("verify=1", False)],
)  # fmt: skip
def test_every_apprise_verify_value_that_turns_tls_off_is_warned_about(
    cli, query: str, warned: bool
) -> None:
    """Apprise reads ?verify= with parse_bool: anything it does not take for yes (never,
    disabled, an empty value, 10) turns the certificate check off. The warning says so
    for each, and Apprise agrees (its plugin's verify_certificate)."""
    import apprise

    uri = f"json://hooks.example/cs?{query}"
    assert apprise.Apprise.instantiate(uri).verify_certificate is not warned
    assert cli("subscribe", "*", "--to", uri, "--name", "v").exit_code == 0
    shown = cli("show", "v", "--json").json()["endpoints"][0]["warnings"]
    assert shown == ([f"TLS not verified ({query})"] if warned else []), shown


def test_apprise_endpoints_follow_redirects_native_webhooks_do_not(cli) -> None:
    """What the README says: Apprise (requests) follows a 307 to wherever it points,
    unless the URI says redirect=no; csnotify's own webhooks never do."""
    with Receiver() as target:
        moved = Answer(307, b"", headers={"Location": target.url + "/elsewhere"})
        with Receiver(lambda _r: moved) as redirecting:
            apprise_uri = redirecting.url.replace("http://", "json://") + "/a"
            r = cli("subscribe", "*", "--to", apprise_uri, "--to", redirecting.url + "/w",
                    "--to", apprise_uri.replace("/a", "/n?redirect=no"), "--name", "r")  # fmt: skip
            assert r.exit_code == 0, r.stderr
            r = cli("-c", "delivery.retry_schedule=0s", "dispatch", "-", input=EVENT, expect=1)
    paths = sorted(q.path for q in redirecting.requests)
    assert paths == ["/a", "/n", "/w"]
    assert [q.path for q in target.requests] == ["/elsewhere"]  # only Apprise followed
    errors = {row["endpoint"].rsplit("/", 1)[1]: row["error"]
              for row in cli("deliveries", "r", "--json").json() if row["error"]}  # fmt: skip
    assert errors.keys() == {"w", "n?redirect=no"}, errors  # redirect= is not masked
    assert errors["w"] == "HTTP 307 (redirects are not followed)"


def test_apprise_endpoints_of_api_made_subscriptions_do_not_follow_redirects(cli) -> None:
    """A tenant's Apprise endpoint (an operator allowed json: through the API) passes the
    address check, then answers 307 to an address the check never saw: not followed for
    the tenant (redirect=no), followed for the operator's same endpoint as documented."""
    from apiserver import ApiServer, make_token

    token = make_token("acme", "ROOT/customers")
    allow = ("-c", "api.allow_schemes=json", "-c", "api.allow_networks=127.0.0.0/8")
    with Receiver() as inside:
        moved = Answer(307, b"", headers={"Location": inside.url + "/metadata"})
        with Receiver(lambda _r: moved) as outside:
            uri = outside.url.replace("http://", "json://")
            with ApiServer(*allow) as server, server.client(token) as http:
                r = http.post("/v1/subscriptions", json={
                    "name": "acme", "patterns": ["*"], "endpoints": [{"uri": uri + "/acme"}]})  # fmt: skip
                assert r.status_code == 201, r.text
            assert cli("subscribe", "*", "--to", uri + "/ops", "--name", "ops").exit_code == 0
            event = {"id": "e1", "type": "VM.START", "account": "acme", "domain": "customers",
                     "created": "2026-11-25T10:00:00Z"}  # fmt: skip
            r = cli(*allow, "-c", "delivery.retry_schedule=0s", "dispatch", "-",
                    input=json.dumps(event), expect=1)  # fmt: skip
    assert sorted(q.path for q in outside.requests) == ["/acme", "/ops"]
    assert [q.path for q in inside.requests] == ["/metadata"]  # the operator's, followed
    (row,) = cli("deliveries", "acme", "--json").json()
    assert row["status"] == "failed", row


# -- bad input in every new option: one line, exit 2, nothing written -----------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [("delivery.command_env", "A,B C"), ("delivery.command_env", "1X"),
     ("cloudstack.max_response_mb", "0"), ("cloudstack.max_pages", "many"),
     ("amqp.max_message_bytes", "10")],
)  # fmt: skip
def test_new_settings_refuse_bad_values(cli, config_file: Path, key: str, value: str) -> None:
    r = cli("config", "set", key, value, expect=2)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.count(key) == 1, r.stderr  # named once
    assert not config_file.exists()
