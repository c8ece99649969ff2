"""Operator control through the real CLI against real local receivers: mutes, rate limits
with digests, --group-wait and redeliver (issue 7; `match` is in test_match.py)."""

from __future__ import annotations

import collections
import json
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from helpers import file_digest, run_process
from receivers import Answer, Receiver, SmsEagleGateway, SmtpSink
from services import wait_for

pytestmark = pytest.mark.usefixtures("fast_retries")


def subscribe(cli, *args: str) -> dict:
    r = cli("subscribe", *args, "--json")
    assert r.exit_code == 0, r.stderr
    return r.json()


def event(i: int, kind: str = "VM.START", level: str = "INFO") -> dict:
    return {"id": f"ev-{i:04d}", "type": kind, "level": level, "created": "2026-11-25T10:00:00Z",
            "state": "Completed",
            "category": "ActionEvent", "resource_name": f"vm-{i}", "description": f"event {i}"}  # fmt: skip


def lines(events: list[dict]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def endpoints(cli, name: str) -> list[dict]:
    return cli("show", name, "--json").json()["endpoints"]


def body_text(msg) -> str:
    part = msg.get_payload(0) if msg.is_multipart() else msg
    return part.get_payload(decode=True).decode()


def start_listen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "csnotify", "listen", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


# -- mutes ---------------------------------------------------------------------------------


def test_mute_refuses_bad_input_and_stores_nothing(cli, db_file: Path) -> None:
    subscribe(cli, "VM.*", "--to", "https://hooks.example/cs", "--name", "hooks")
    before = file_digest(db_file)
    bad = [
        (["hooks", "--for", "2h"], "--reason"),
        (["hooks", "--reason", "x"], "--for"),
        (["hooks", "--for", "2h", "--until", "2099-01-01T00:00Z", "--reason", "x"], "--for"),
        (["--for", "2h", "--reason", "x"], "--all"),
        (["hooks", "--all", "--for", "2h", "--reason", "x"], "--all"),
        (["hoks", "--for", "2h", "--reason", "x"], "did you mean 'hooks'"),
        (["hooks", "--for", "soon", "--reason", "x"], "90s, 30m, 2h"),
        (["hooks", "--for", "0s", "--reason", "x"], "positive"),
        (["hooks", "--until", "2020-01-01T00:00:00Z", "--reason", "x"], "in the past"),
        (["hooks", "--until", "2099-01-01T00:00:00Z", "--reason", "x"], "at most 366 days"),
        (["hooks", "--for", "2h", "--pattern", "VM START", "--reason", "x"], "pattern"),
        (["hooks", "--endpoint", "https://other.example", "--for", "2h", "--reason", "x"],
         "no endpoint"),
        (["--all", "--endpoint", "https://other.example", "--for", "2h", "--reason", "x"],
         "no subscription has endpoint"),
    ]  # fmt: skip
    for args, words in bad:
        r = cli("mute", *args, expect=2)
        assert r.exit_code == 2, (args, r.stdout, r.stderr)
        assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert file_digest(db_file) == before
    assert cli("mutes", "--json").json() == []


def test_mute_list_and_unmute(cli) -> None:
    subscribe(cli, "VM.*", "--to", "https://hooks.example/cs?token=s3cret", "--name", "hooks")
    r = cli("mute", "hooks", "--endpoint", "https://hooks.example/cs?token=s3cret",
            "--pattern", "vm.stop", "--for", "2h", "--reason", "upgrade  CHG-1")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert re.match(
        r"mute 1: hooks, https://hooks\.example/cs\?token=\S+, vm\.stop muted until", r.stdout
    )
    assert "s3cret" not in r.stdout and "csnotify unmute 1" in r.stdout
    later = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(time.time() + 30 * 86400))  # as typed
    assert cli("mute", "--all", "--until", later, "--reason", "freeze").exit_code == 0
    (first, second) = cli("mutes", "--json").json()
    assert first["subscription"] == "hooks" and first["pattern"] == "vm.stop"
    assert first["reason"] == "upgrade CHG-1" and "s3cret" not in first["endpoint"]
    assert 7190 <= first["seconds_left"] <= 7201  # rounded up to the second
    assert second["subscription"] is None and second["until"] == later[:-1] + ":00Z"
    table = cli("mutes").stdout
    assert "upgrade CHG-1" in table and "(all)" in table and "freeze" in table
    r = cli("unmute", "1")
    assert r.exit_code == 0 and r.stdout.startswith("unmuted 1: hooks")
    assert [m["id"] for m in cli("mutes", "--json").json()] == [2]
    ended = cli("mutes", "--all", "--json").json()  # ended by unmute, still shown
    assert [m["id"] for m in ended] == [1, 2] and ended[0]["seconds_left"] == 0
    assert ended[0]["reason"] == "upgrade CHG-1"
    r = cli("unmute", "1", expect=2)
    assert r.exit_code == 2 and "no mute in force with id 1" in r.stderr
    assert (
        cli("mute", "hooks", "--for", "1m", "--reason", "x", "--json").json()["id"] == 3
    )  # ids never reused
    status = cli("status", "--json").json()
    assert [m["id"] for m in status["mutes"]] == [2, 3]
    assert "mute 2: all subscriptions" in cli("status").stdout
    # --all with an endpoint, typed in the masked form that list shows
    masked = first["endpoint"]
    assert cli("mute", "--all", "--endpoint", masked, "--for", "1m", "--reason", "z").exit_code == 0
    assert cli("mutes", "--json").json()[-1]["endpoint"] == masked
    assert cli("unmute", "2", "3").exit_code == 0  # so that only mute 4 covers VM.START
    assert "(muted, not sent: mute 4 until" in cli("match", "VM.START").stdout


def test_muted_events_are_recorded_not_sent_and_not_failures(cli) -> None:
    with Receiver() as a, Receiver() as b, Receiver() as other:
        subscribe(cli, "VM.*", "--to", a.url, "--to", b.url, "--name", "two")
        subscribe(cli, "*", "--to", other.url, "--name", "other")
        assert (
            cli("mute", "two", "--pattern", "VM.STOP", "--for", "1h", "--reason", "x").exit_code
            == 0
        )
        assert (
            cli("mute", "two", "--endpoint", b.url, "--for", "1h", "--reason", "y").exit_code == 0
        )
        events = [event(i, "VM.STOP" if i % 2 else "VM.START") for i in range(6)]
        r = cli("dispatch", "-", "--json", input=lines(events))
        assert r.exit_code == 0, r.stderr
        summary = r.json()
        assert (
            summary["muted"] == 3 + 6 and summary["delivered"] == 3 + 6 and summary["failed"] == 0
        )
        assert [x["event"]["type"] for x in a.bodies()] == ["VM.START"] * 3
        assert b.requests == [] and len(other.requests) == 6
    ep_a, ep_b = endpoints(cli, "two")
    assert (ep_a["total_muted"], ep_a["total_successes"], ep_a["total_failures"]) == (3, 3, 0)
    assert (ep_b["total_muted"], ep_b["total_successes"], ep_b["consecutive_failures"]) == (6, 0, 0)
    assert ep_b["enabled"]
    rows = cli("deliveries", "two", "--json").json()
    muted = [r for r in rows if r["status"] == "muted"]
    assert len(muted) == 9 and all(r["error"].startswith("muted until ") for r in muted)
    assert "muted" in cli("deliveries", "two").stdout
    status = cli("status", "--json").json()
    assert [e["total_muted"] for e in status["endpoints"]] == [0, 3, 6]


def test_a_mute_ends_by_itself_in_the_middle_of_a_run(cli) -> None:
    with Receiver() as rx:
        subscribe(cli, "VM.*", "--to", rx.url, "--name", "hooks")
        r = cli("mute", "--all", "--for", "5s", "--reason", "short window", "--json")
        assert r.exit_code == 0
        ends = datetime.fromisoformat(r.json()["until"]).timestamp()
        assert time.time() + 5 <= ends <= time.time() + 6
        proc = start_listen("--source", "stdin")
        assert proc.stdin is not None

        def send(item: dict) -> float:
            proc.stdin.write(json.dumps(item) + "\n")
            proc.stdin.flush()
            return time.time()

        send(event(999))  # the listener is running once this one is recorded

        def statuses() -> dict[str, str]:
            return {r["event_id"]: r["status"] for r in cli("deliveries", "--json").json()}

        assert wait_for(lambda: "ev-0999" in statuses(), timeout=4), "listen did not start in time"
        sent_at = {}
        i = 0
        while time.time() < ends + 2:  # one event every 0.4 s, until 2 s after the end
            sent_at[f"ev-{i:04d}"] = send(event(i))
            i += 1
            time.sleep(0.4)
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    got = {b["event"]["id"] for b in rx.bodies()}
    rows = statuses()
    margin = 0.3  # the listener reads the line a moment after it is written
    for ev_id, at in sent_at.items():
        if at < ends - margin:
            assert rows[ev_id] == "muted" and ev_id not in got, ev_id
        elif at > ends + margin:
            assert rows[ev_id] == "delivered" and ev_id in got, ev_id
    counts = collections.Counter(rows.values())
    assert counts["muted"] >= 2 and counts["delivered"] >= 3, counts
    assert cli("mutes", "--json").json() == []
    assert cli("mutes", "--all", "--json").json()[0]["seconds_left"] == 0


# -- rate limits and digests ----------------------------------------------------------------


def test_limits_are_set_per_endpoint_and_exported(cli, db_file: Path, tmp_path: Path) -> None:
    mail = "mailto://127.0.0.1:2525?from=cs@example.com&to=ops@example.com"
    hook = "https://hooks.example/cs"
    subscribe(cli, "*", "--to", mail, "--to", hook, "--name", "ops")
    assert [e["max_per_minute"] for e in endpoints(cli, "ops")] == [None, None]
    shown = cli("show", "ops", env={"COLUMNS": "200"}).stdout
    assert "10/min (default)" in shown and "none (default)" in shown
    before = file_digest(db_file)
    for bad in ("-1", "ten", "1e3", "200000"):
        r = cli("update", "ops", "--max-per-minute", bad, expect=2)
        assert r.exit_code == 2 and "--max-per-minute" in r.stderr, (bad, r.stderr)
    r = cli("update", "ops", "--endpoint", hook, expect=2)
    assert r.exit_code == 2 and "--endpoint goes with --max-per-minute" in r.stderr
    assert cli("update", "ops", "--group-wait", "2h", expect=2).exit_code == 2
    assert cli("update", "ops", "--group-wait", "whenever", expect=2).exit_code == 2
    assert file_digest(db_file) == before
    assert cli("update", "ops", "--max-per-minute", "5", "--group-wait", "1m").exit_code == 0
    assert [e["max_per_minute"] for e in endpoints(cli, "ops")] == [5, 5]
    assert cli("update", "ops", "--max-per-minute", "0", "--endpoint", hook).exit_code == 0
    assert [e["max_per_minute"] for e in endpoints(cli, "ops")] == [5, 0]
    shown = cli("show", "ops", env={"COLUMNS": "200"}).stdout
    assert "5/min" in shown and "group wait: 60 s" in shown
    exported = tmp_path / "subs.json"
    assert cli("export", "-o", str(exported), "--with-secrets").exit_code == 0
    item = json.loads(exported.read_text())["subscriptions"][0]
    assert item["group_wait"] == 60 and [e.get("max_per_minute") for e in item["endpoints"]] == [
        5,
        0,
    ]
    assert cli("update", "ops", "--max-per-minute", "default", "--group-wait", "0").exit_code == 0
    assert [e["max_per_minute"] for e in endpoints(cli, "ops")] == [None, None]
    r = cli("import", str(exported), "--replace")
    assert r.exit_code == 0, r.stderr
    sub = cli("show", "ops", "--json").json()
    assert sub["group_wait"] == 60 and [e["max_per_minute"] for e in sub["endpoints"]] == [5, 0]


def test_storm_to_limited_email_sms_and_webhooks_gives_a_handful_of_messages(cli) -> None:
    """1,000 events in one burst. Email limited to 10/min, SMS at the default (10/min), one
    webhook limited to 5/min, one webhook with no limit. Takes a minute: the digests go
    out when the window reopens."""
    kinds = ["VM.STOP", "VM.STOP", "VM.START", "VM.STOP", "VOLUME.CREATE"]
    events = [event(i, kinds[i % len(kinds)], "ERROR" if i == 500 else "INFO") for i in range(1000)]
    with SmtpSink() as smtp, SmsEagleGateway() as sms, Receiver() as slow, Receiver() as free:
        subscribe(cli, "*", "--to", smtp.uri(), "--max-per-minute", "10", "--name", "mail")
        subscribe(cli, "*", "--to", sms.uri(), "--name", "sms")
        subscribe(cli, "*", "--to", slow.url, "--max-per-minute", "5", "--name", "slow")
        subscribe(cli, "*", "--to", free.url, "--name", "free")
        started = time.monotonic()
        r = cli("dispatch", "-", "--json", input=lines(events))
        took = time.monotonic() - started
        assert r.exit_code == 0, r.stderr
    assert 59 < took < 90  # the digests waited for the window to reopen
    assert len(free.requests) == 1000  # webhooks: no limit unless one is set

    def check(first: list[str], digest_counts: dict[str, int], limit: int) -> None:
        assert len(first) == limit
        sent = collections.Counter(first)
        assert dict(sent + collections.Counter(digest_counts)) == dict(
            collections.Counter(e["type"] for e in events)
        )

    # email: 10 single messages, then one digest with the rest, counted by type
    subjects = [m["Subject"] for _f, _to, m in smtp.messages]
    assert len(smtp.messages) == 11, subjects
    *singles, digest = smtp.messages
    single_types = [
        re.match(r"\[CloudStack\] (\S+) ", m["Subject"]).group(1) for _f, _t, m in singles
    ]
    assert digest[2]["Subject"] == (
        "[CloudStack] 990 more events: 594 VM.STOP, 198 VM.START, 198 VOLUME.CREATE"
    )
    check(single_types, {"VM.STOP": 594, "VM.START": 198, "VOLUME.CREATE": 198}, 10)
    text = body_text(digest[2])
    assert "INFO VM.STOP vm-10: event 10" in text and "and 940 more not listed" in text

    # SMS: the default limit; the digest fits one text
    texts = sms.texts()
    assert len(texts) == 11 and texts[-1] == (
        "990 more events: 594 VM.STOP, 198 VM.START, 198 VOLUME.CREATE"
    )

    # a limited webhook gets the digest as an event of its own, with the counts
    bodies = slow.bodies()
    assert len(bodies) == 6
    digest_event = bodies[-1]["event"]
    assert digest_event["type"] == "CSNOTIFY.DIGEST" and digest_event["level"] == "ERROR"
    assert digest_event["raw"]["count"] == 995
    check([b["event"]["type"] for b in bodies[:5]], digest_event["raw"]["types"], 5)
    assert [e["id"] for e in digest_event["raw"]["events"][:2]] == ["ev-0005", "ev-0006"]

    (mail_ep,) = endpoints(cli, "mail")
    assert (mail_ep["total_successes"], mail_ep["total_folded"], mail_ep["total_failures"]) == (
        11,
        990,
        0,
    )
    folded = [
        r
        for r in cli("deliveries", "mail", "-n", "100", "--json").json()
        if r["status"] == "folded"
    ]
    assert folded and all("over the rate limit" in r["error"] for r in folded)


def test_pending_batch_is_sent_after_a_restart(cli) -> None:
    """A group held when listen stops (SIGTERM) is kept in the store; the next run sends it
    (the group was due while no listen ran)."""
    with SmsEagleGateway() as sms:
        subscribe(cli, "VM.*", "--to", sms.uri(), "--group-wait", "5s", "--name", "sms")
        proc = start_listen("--source", "stdin")
        assert proc.stdin is not None
        proc.stdin.write(lines([event(1, "VM.STOP"), event(2, "VM.STOP"), event(3)]))
        proc.stdin.flush()
        assert wait_for(lambda: endpoints(cli, "sms")[0]["total_folded"] == 3, timeout=10), (
            "the events were not folded"
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        proc.stdin.close()
        time.sleep(5.2)
        assert sms.texts() == []  # the first run stopped before the group was due
        r = run_process("listen", "--source", "stdin", input="")
        assert r.exit_code == 0, r.stderr
        assert sms.texts() == ["3 events: 2 VM.STOP, 1 VM.START"]


def test_duration_sends_pending_groups_before_it_exits(cli) -> None:
    """--duration is a planned end (the tour's ten seconds): a group held then goes out."""
    with SmsEagleGateway() as sms:
        subscribe(cli, "VM.*", "--to", sms.uri(), "--group-wait", "3s", "--name", "sms")
        proc = start_listen("--source", "stdin", "--duration", "1")  # stdin stays open
        assert proc.stdin is not None
        proc.stdin.write(lines([event(1, "VM.STOP"), event(2, "VM.STOP"), event(3)]))
        proc.stdin.flush()
        started = time.monotonic()
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
        proc.stdin.close()
        assert sms.texts() == ["3 events: 2 VM.STOP, 1 VM.START"]


# -- grouping ------------------------------------------------------------------------------


def test_group_wait_sends_a_burst_as_one_message_to_human_endpoints(cli) -> None:
    with SmtpSink() as smtp, Receiver() as rx:
        subscribe(cli, "VM.*", "--to", smtp.uri(), "--to", rx.url, "--group-wait", "2s",
                  "--name", "grouped")  # fmt: skip
        burst = [event(i, "VM.STOP" if i < 3 else "VM.START") for i in range(5)]
        started = time.monotonic()
        r = cli("dispatch", "-", input=lines(burst))
        assert r.exit_code == 0, r.stderr
        assert 1.9 < time.monotonic() - started < 10
        assert "5 folded" in r.stdout
        assert len(rx.requests) == 5  # webhooks are not grouped
        ((_f, _to, msg),) = smtp.messages
        assert msg["Subject"] == "[CloudStack] 5 events: 3 VM.STOP, 2 VM.START"
        text = body_text(msg)
        for i in range(5):
            assert f"vm-{i}: event {i}" in text
        # a group that stays alone is sent as the event itself
        r = cli("dispatch", "-", input=lines([event(9)]))
        assert r.exit_code == 0
        assert smtp.messages[-1][2]["Subject"] == "[CloudStack] VM.START Completed: vm-9"
    r = cli("subscribe", "VM.*", "--to", "https://hooks.example/cs", "--group-wait", "30s")
    assert r.exit_code == 0 and "--group-wait applies to email, SMS and chat endpoints" in r.stderr
    (mail_ep, hook_ep) = endpoints(cli, "grouped")
    assert (mail_ep["total_folded"], mail_ep["total_successes"]) == (6, 2)
    assert (hook_ep["total_folded"], hook_ep["total_successes"]) == (0, 6)


# -- redeliver -----------------------------------------------------------------------------


def test_redeliver_after_reenabling_fills_the_gap_with_the_same_ids(cli) -> None:
    down = {"yes": True}
    with Receiver(lambda _r: Answer(503) if down["yes"] else Answer(200)) as rx:
        subscribe(cli, "VM.*", "--to", rx.url, "--key", "generate", "--name", "hooks")
        r = cli("-c", "failures.disable_after=3", "-c", "delivery.retry_schedule=0s", "dispatch", "-",
                "--json", input=lines([event(i) for i in range(5)]), expect=1)  # fmt: skip
        # the first three failed; the other two wait in the store for the endpoint
        assert r.json()["failed"] == 3 and r.json()["waiting"] == 2
        assert not endpoints(cli, "hooks")[0]["enabled"]
        first_ids = [q.headers["webhook-id"] for q in rx.requests]
        r = cli("redeliver", "hooks", "--endpoint", rx.url, expect=2)
        assert (
            r.exit_code == 2 and "switched off" in r.stderr and "csnotify enable hooks" in r.stderr
        )
        down["yes"] = False
        assert cli("enable", "hooks", "--endpoint", rx.url).exit_code == 0
        r = cli("redeliver", "hooks", "--since", "1h", "--failed")
        assert r.exit_code == 0, r.stderr
        # the run sends the three failed ones again and the two that waited
        assert r.stdout.startswith(
            "redelivered 3 logged deliveries of hooks: 5 delivered, 0 failed"
        )
        assert "0 of the window no longer in the log" in r.stdout
        again = rx.requests[len(first_ids) :]
        by_event = {q.json()["event"]["id"]: q.headers["webhook-id"] for q in again}
        assert sorted(by_event) == [f"ev-{i:04d}" for i in range(5)] and len(again) == 5
        assert [by_event[f"ev-{i:04d}"] for i in range(3)] == first_ids
        # nothing failed any more, and an empty window sends nothing
        assert cli("redeliver", "hooks", "--failed", "--json").json()["in_log"] == 0
        r = cli("redeliver", "hooks", "--until", "2h", "--json")
        assert r.json()["in_log"] == 0 and len(rx.requests) == 8
    assert cli("redeliver", "nope", expect=2).exit_code == 2


def test_redeliver_says_how_much_of_the_window_the_log_no_longer_holds(cli) -> None:
    with Receiver() as rx:
        subscribe(cli, "*", "--to", rx.url, "--name", "hooks", "--key", "generate")
        r = cli(
            "-c",
            "log.max_per_endpoint=5",
            "dispatch",
            "-",
            input=lines([event(i) for i in range(12)]),
        )
        assert r.exit_code == 0
        first = [q.headers["webhook-id"] for q in rx.requests]
        r = cli("-c", "log.max_per_endpoint=5", "redeliver", "hooks", "--since", "10m", "--json")
        assert r.exit_code == 0, r.stderr
        report = r.json()
        assert (report["in_log"], report["not_in_log"], report["delivered"]) == (5, 7, 5)
        assert [q.headers["webhook-id"] for q in rx.requests[12:]] == first[7:]
        # a time with an offset means that moment (10 minutes ago, written in UTC+01:00)
        ten_ago = time.strftime("%Y-%m-%dT%H:%M:%S+01:00", time.gmtime(time.time() - 600 + 3600))
        r = cli("redeliver", "hooks", "--since", ten_ago, "--json")
        assert r.json()["in_log"] == 5, r.stdout
        r = cli("redeliver", "hooks", "--since", "2099-01-01T00:00:00Z", "--json")
        assert (r.json()["in_log"], r.json()["not_in_log"]) == (0, 0)
        r = cli("redeliver", "hooks", "--since", "1m", "--until", "2h", expect=2)
        assert r.exit_code == 2 and "--since is after --until" in r.stderr


def test_a_date_alone_is_a_time_wherever_a_time_is_taken(cli) -> None:
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 3 * 86400))
    cli("subscribe", "VM.*", "--to", "http://127.0.0.1:9/", "--name", "d")
    r = cli("mute", "d", "--until", day, "--reason", "maintenance", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["until"] == f"{day}T00:00:00Z"
    r = cli("redeliver", "d", "--since", "2024-05-14", "--until", "2024-05-15")
    assert r.exit_code == 0, r.stderr
    r = cli("mute", "d", "--until", "14/05/2099", "--reason", "x", expect=2)
    assert r.exit_code == 2 and "or 2024-05-14" in r.stderr
