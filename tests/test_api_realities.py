"""The API source and `events` against CloudStack as deployed, not as we would like it:
a management server west of UTC, one east with a half-hour offset, one crossing a DST
change, bursts bigger than a page with ties in a new order on every query, a page size
limit below ours, and the error codes that must stop us. `csnotify simulate` plays the
server (it follows CloudStack's code: see README, "Tested against"); listen runs as a
separate process, deliveries go to a real local receiver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers import run_process
from receivers import Receiver
from services import simulator, wait_for

from csnotify.servertime import offset_text

WEST = "America/Los_Angeles"
EAST_HALF_HOUR = "Asia/Kolkata"


def api_env(sim, **extra: str) -> dict[str, str]:
    return {**os.environ, "CSNOTIFY_CLOUDSTACK_URL": sim.url,
            "CSNOTIFY_CLOUDSTACK_API_KEY": "test-api-key",
            "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "test-secret-key", **extra}  # fmt: skip


def listen(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "csnotify", "listen", "--source", "api", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def subscribe_all(rx: Receiver) -> None:
    r = run_process("subscribe", "*", "--category", "*", "--to", rx.url, "--name", "all")
    assert r.exit_code == 0, r.stderr


def api_ids(sim) -> list[str]:
    return [r["list_item"]["id"] for r in sim.recorded() if r["list_item"]]


def delivered_once(sim, rx: Receiver, proc: subprocess.Popen[str], timeout: float = 90) -> str:
    """Wait for every listEvents row the simulator made to arrive; then stop listen and
    check each arrived exactly once. Returns listen's stderr."""
    sim.wait_generated()
    expected = api_ids(sim)
    arrived = wait_for(lambda: len(rx.requests) >= len(expected), timeout)
    wait_for(lambda: False, 1.0)  # nothing more may arrive
    err = stop(proc)
    got = [b["event"]["id"] for b in rx.bodies()]
    assert arrived, f"{len(got)} of {len(expected)} arrived; listen said: {err[-2000:]}"
    assert sorted(got) == sorted(expected), err[-2000:]
    return err


def cursor() -> dict:
    r = run_process("status", "--json")
    assert r.exit_code == 0, r.stderr
    (cur,) = r.json()["cursors"]
    return cur


@pytest.mark.parametrize("zone", [WEST, EAST_HALF_HOUR])
def test_listen_in_the_servers_zone_delivers_every_event_once(zone: str, tmp_path: Path) -> None:
    with (
        Receiver() as rx,
        simulator(tmp_path, "--timezone", zone, "--count", "400", "--rate", "80/s") as sim,
    ):
        subscribe_all(rx)
        proc = listen(api_env(sim), "--interval", "0.3", "--since", "1m")
        delivered_once(sim, rx, proc)
    offset = offset_text(datetime.now(ZoneInfo(zone)).utcoffset() or timedelta(0))
    assert cursor()["server_offset"] == offset  # learned from created; status shows it
    assert cursor()["created"].endswith("Z")  # the cursor itself is UTC


def test_forced_zone_wins_and_a_wrong_zone_name_is_bad_input(tmp_path: Path) -> None:
    with (
        Receiver() as rx,
        simulator(tmp_path, "--timezone", WEST, "--count", "100", "--rate", "80/s") as sim,
    ):
        subscribe_all(rx)
        proc = listen(api_env(sim, CSNOTIFY_CLOUDSTACK_TIMEZONE=WEST), "--interval", "0.3",
                      "--since", "1m")  # fmt: skip
        delivered_once(sim, rx, proc)
        assert cursor()["server_zone"] == WEST
        before = len(rx.requests)
        r = run_process("listen", "--source", "api", "--once",
                        env=api_env(sim, CSNOTIFY_CLOUDSTACK_TIMEZONE="Mars/Olympus"))  # fmt: skip
        assert r.exit_code == 2
        assert r.stderr.strip().splitlines() == [
            "csnotify: error: cloudstack.timezone: unknown time zone 'Mars/Olympus'; use an"
            " IANA name such as America/New_York or an offset such as +05:30"
            " (from $CSNOTIFY_CLOUDSTACK_TIMEZONE)"
        ]
        assert len(rx.requests) == before


@pytest.mark.parametrize("forced", [False, True])
def test_across_the_end_of_dst_nothing_is_lost_or_repeated(forced: bool, tmp_path: Path) -> None:
    # New York falls back at 06:00Z on 2026-11-01: 01:00 to 01:59 local happen twice. The
    # server's clock starts just before; the cursor sits in the repeated hour while events
    # of both passes arrive, and the server reads a repeated wall time as the later one.
    zone = "America/New_York"
    extra = {"CSNOTIFY_CLOUDSTACK_TIMEZONE": zone} if forced else {}
    with (
        Receiver() as rx,
        simulator(tmp_path, "--timezone", zone, "--start", "2026-11-01T05:59:54Z",
                  "--count", "300", "--rate", "25/s") as sim,
    ):  # fmt: skip
        subscribe_all(rx)
        proc = listen(api_env(sim, **extra), "--interval", "0.3", "--since",
                      "2026-11-01T05:59:00Z")  # fmt: skip
        delivered_once(sim, rx, proc)
    created = [r["list_item"]["created"] for r in sim.recorded() if r["list_item"]]
    assert any(c.endswith("-0400") for c in created) and any(c.endswith("-0500") for c in created)


def test_bursts_bigger_than_a_page_with_a_lower_page_limit(tmp_path: Path) -> None:
    # --rate 0: a thousand listEvents rows in a second or two, pages of at most 50 on the
    # server, ties in a new order on every query, rows still arriving while we read.
    with (
        Receiver() as rx,
        simulator(tmp_path, "--timezone", EAST_HALF_HOUR, "--count", "3000", "--rate", "0",
                  "--max-page-size", "50", "--seed", "7") as sim,
    ):  # fmt: skip
        subscribe_all(rx)
        proc = listen(api_env(sim), "--interval", "0.2", "--since", "1m")
        err = delivered_once(sim, rx, proc, timeout=120)
        per_second: dict[str, int] = {}
        for r in sim.recorded():
            if r["list_item"]:
                per_second[r["list_item"]["created"]] = (
                    per_second.get(r["list_item"]["created"], 0) + 1
                )
        assert max(per_second.values()) > 50, per_second  # really bigger than a page
    assert "page size" not in err.lower()  # lowered quietly, not an error
    assert cursor()["page_size"] == 50  # learned from the 431 text and kept


def test_events_since_10m_is_exactly_the_last_ten_minutes(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    for zone in (WEST, EAST_HALF_HOUR):
        tz = ZoneInfo(zone)
        rows = [
            {"id": f"00000000-0000-4000-8000-{i:012d}", "type": "VM.START", "level": "INFO",
             "state": "Completed", "description": "started", "account": "admin",
             "created": (now - timedelta(seconds=37 * i + 5)).astimezone(tz).strftime(
                 "%Y-%m-%dT%H:%M:%S%z")}
            for i in range(60)  # 5 s to 36 min ago
        ]  # fmt: skip
        replay = tmp_path / f"{zone.replace('/', '-')}.json"
        replay.write_text(json.dumps({"listeventsresponse": {"count": 60, "event": rows}}))
        with simulator(tmp_path, "--replay", str(replay), "--rate", "0", "--timezone", zone) as sim:
            sim.wait_generated()
            before = datetime.now(UTC)
            r = run_process("events", "--since", "10m", "--json", "--limit", "1000",
                            env=api_env(sim))  # fmt: skip
            after = datetime.now(UTC)
        assert r.exit_code == 0, r.stderr

        def within(start: datetime, rows=rows) -> set[str]:
            return {
                row["id"]
                for row in rows
                if datetime.strptime(row["created"], "%Y-%m-%dT%H:%M:%S%z") >= start
            }

        got = {json.loads(line)["id"] for line in r.stdout.splitlines()}
        slack = timedelta(seconds=2)  # startdate has whole seconds; the clocks are read apart
        latest, earliest = (
            within(after - timedelta(minutes=10) + slack),
            within(before - timedelta(minutes=10) - slack),
        )
        assert latest <= got <= earliest, zone
        assert len(got) in (16, 17), zone  # 5 s + 37 s * i <= 600 s: i = 0..15


class CloudStackRefusing:
    """Answers listEvents with one CloudStack error (HTTP status = errorcode, as
    ApiServer.writeResponse does), or with 200 an empty page."""

    def __init__(self, code: int, text: str) -> None:
        error = {"listeventsresponse": {"uuidList": [], "errorcode": code, "errortext": text}}
        body = json.dumps(error if code != 200 else {"listeventsresponse": {}}).encode()
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.hits += 1
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/client/api"

    def close(self) -> None:
        self.http.shutdown()


@pytest.mark.parametrize(
    ("code", "text", "says"),
    [
        (401, "unable to verify user credentials and/or request signature",
         "refused the API key or signature (401"),
        (432, "The given command:listEvents does not exist or it is not available for user",
         "give the account's role permission for listEvents"),
        (531, "Account admin does not have permission to operate within domain id=3",
         "denied permission for listEvents (531"),
        (431, "Unable to execute API command listevents due to invalid value. Invalid"
         " parameter domainid value=abc", "rejected a parameter of listEvents (431: Unable"),
    ],
)  # fmt: skip
def test_refusals_stop_with_exit_3_and_say_why(code: int, text: str, says: str) -> None:
    server = CloudStackRefusing(code, text)
    env = {**os.environ, "CSNOTIFY_CLOUDSTACK_URL": server.url,
           "CSNOTIFY_CLOUDSTACK_API_KEY": "k", "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "s"}  # fmt: skip
    try:
        for args in (("events",), ("listen", "--source", "api", "--interval", "0.1")):
            r = run_process(*args, env=env, timeout=30)
            assert r.exit_code == 3, r.stderr
            # one line says why (listen's start line comes first)
            (line,) = [ln for ln in r.stderr.strip().splitlines() if " notice: " not in ln]
            assert says in line
    finally:
        server.close()
    assert server.hits <= 4  # no retry loop


def test_page_size_setting_below_one_is_bad_input(cli, config_file: Path) -> None:
    r = cli("config", "set", "cloudstack.page_size", "0", expect=2)
    assert r.exit_code == 2 and "at least 1" in r.stderr
    assert not config_file.exists()
    r = cli("simulate", "--max-page-size", "0", expect=2)
    assert r.exit_code == 2
    assert r.stderr.strip() == ("csnotify: error: --max-page-size 0: use a page size of 1 or more")
    r = cli("config", "set", "cloudstack.timezone", "Atlantis/Lost", expect=2)
    assert r.exit_code == 2 and "unknown time zone 'Atlantis/Lost'" in r.stderr
    assert not config_file.exists()
    assert cli("config", "set", "cloudstack.timezone", "Asia/Kolkata").exit_code == 0


def list_events_inner(sim) -> dict:
    """What `cmk -o json list events listall=true` and `cs listEvents listall=true` print:
    the response's inner object, without the listeventsresponse wrapper."""
    import urllib.request

    from csnotify.signing import signed_api_query

    params = {"command": "listEvents", "response": "json", "listall": "true",
              "apiKey": "test-api-key", "signatureVersion": "3",
              "expires": "2999-01-01T00:00:00+0000"}  # fmt: skip
    with urllib.request.urlopen(f"{sim.url}?{signed_api_query(params, 'test-secret-key')}") as r:
        return json.loads(r.read())["listeventsresponse"]


@pytest.mark.parametrize(
    "render",
    [
        lambda inner: json.dumps(inner, indent=2, ensure_ascii=False),  # cmk -o json
        lambda inner: json.dumps(inner, indent=2, sort_keys=True),  # cs
        json.dumps,
    ],
    ids=["cmk", "cs", "compact"],
)
def test_cmk_and_cs_output_piped_to_dispatch(render, tmp_path: Path) -> None:
    with (
        Receiver() as rx,
        simulator(tmp_path, "--count", "40", "--rate", "0", "--timezone", WEST) as sim,
    ):
        sim.wait_generated()
        subscribe_all(rx)
        inner = list_events_inner(sim)
        assert set(inner) == {"count", "event"}
        r = run_process("dispatch", "-", input=render(inner))
    assert r.exit_code == 0, r.stderr
    assert sorted(b["event"]["id"] for b in rx.bodies()) == sorted(e["id"] for e in inner["event"])
    created = {b["event"]["id"]: b["event"]["created"] for b in rx.bodies()}
    row = inner["event"][0]
    assert created[row["id"]] == (
        datetime.strptime(row["created"], "%Y-%m-%dT%H:%M:%S%z").astimezone(UTC)
    ).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_verify_tls_and_a_private_ca(tmp_path: Path) -> None:
    """cmk's verifycert = false maps to cloudstack.verify_tls = false; cloudstack.ca_file
    trusts a private CA instead."""
    import shutil
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = CloudStackRefusing(200, "")  # 200: an empty page
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    server.http.socket = context.wrap_socket(server.http.socket, server_side=True)
    env = {**os.environ, "CSNOTIFY_CLOUDSTACK_URL": server.url.replace("http:", "https:"),
           "CSNOTIFY_CLOUDSTACK_API_KEY": "k", "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "s"}  # fmt: skip
    try:
        r = run_process("events", env=env)
        assert r.exit_code == 3 and "CERTIFICATE_VERIFY_FAILED" in r.stderr, r.stderr
        r = run_process("events", env={**env, "CSNOTIFY_CLOUDSTACK_VERIFY_TLS": "false"})
        assert r.exit_code == 0 and r.stderr.strip() == "no events", r.stderr
        r = run_process("events", env={**env, "CSNOTIFY_CLOUDSTACK_CA_FILE": str(cert)})
        assert r.exit_code == 0 and r.stderr.strip() == "no events", r.stderr
        r = run_process("events", env={**env, "CSNOTIFY_CLOUDSTACK_CA_FILE": str(tmp_path / "no")})
        assert r.exit_code == 2 and "cannot use cloudstack.ca_file" in r.stderr
    finally:
        server.close()


@pytest.mark.parametrize("forced", [False, True])
def test_events_window_across_the_end_of_dst_is_exact(forced: bool, tmp_path: Path) -> None:
    tz = ZoneInfo("America/New_York")
    first = datetime(2026, 11, 1, 4, 30, 7, tzinfo=UTC)
    rows = [
        {"id": f"00000000-0000-4000-8000-{i:012d}", "type": "VM.STOP", "level": "INFO",
         "state": "Completed", "description": "stopped", "account": "admin",
         "created": (first + timedelta(seconds=61 * i)).astimezone(tz).strftime(
             "%Y-%m-%dT%H:%M:%S%z")}
        for i in range(150)  # 04:30Z to 07:02Z: 00:30 EDT, the repeated 01:xx, 02:02 EST
    ]  # fmt: skip
    replay = tmp_path / "dst.json"
    replay.write_text(json.dumps({"listeventsresponse": {"count": 150, "event": rows}}))
    extra = {"CSNOTIFY_CLOUDSTACK_TIMEZONE": "America/New_York"} if forced else {}
    since, until = (
        datetime(2026, 11, 1, 5, 40, tzinfo=UTC),
        datetime(2026, 11, 1, 6, 20, tzinfo=UTC),
    )
    with simulator(tmp_path, "--replay", str(replay), "--rate", "0", "--timezone", str(tz)) as sim:
        sim.wait_generated()
        r = run_process("events", "--since", "2026-11-01T05:40:00Z", "--until",
                        "2026-11-01T06:20:00Z", "--json", "--limit", "1000",
                        env=api_env(sim, **extra))  # fmt: skip
    assert r.exit_code == 0, r.stderr
    expected = {
        row["id"]
        for row in rows
        if since <= datetime.strptime(row["created"], "%Y-%m-%dT%H:%M:%S%z") <= until
    }
    assert {json.loads(line)["id"] for line in r.stdout.splitlines()} == expected
    assert {row["created"][-5:] for row in rows if row["id"] in expected} == {"-0400", "-0500"}


def test_page_size_is_halved_when_the_431_names_no_limit() -> None:
    """An older or patched server that refuses the page size without stating its limit:
    halve until it accepts, then go on (here: no events)."""
    sizes: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            from urllib.parse import parse_qs, urlparse

            size = int(parse_qs(urlparse(self.path).query)["pagesize"][0])
            sizes.append(size)
            doc = (
                {"listeventsresponse": {"errorcode": 431, "errortext": "Invalid page size"}}
                if size > 100
                else {"listeventsresponse": {}}
            )
            body = json.dumps(doc).encode()
            self.send_response(431 if size > 100 else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    env = {**os.environ, "CSNOTIFY_CLOUDSTACK_URL": f"http://127.0.0.1:{http.server_address[1]}/client/api",
           "CSNOTIFY_CLOUDSTACK_API_KEY": "k", "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "s"}  # fmt: skip
    try:
        r = run_process("events", "--since", "1h", env=env)
    finally:
        http.shutdown()
    assert r.exit_code == 0 and r.stderr.strip() == "no events", r.stderr
    assert sizes[:4] == [500, 250, 125, 62]
    assert set(sizes[4:]) == {62}
