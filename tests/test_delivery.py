"""dispatch / test / verify / deliveries through the real CLI against real local
receivers: HTTP, SMTP (aiosmtpd), an SMSEagle stand-in and real programs."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import threading
from pathlib import Path

import pytest
from helpers import FIXTURES, load_fixture
from receivers import Answer, Receiver, SmsEagleGateway, SmtpSink, closed_port
from test_signing import spec_verify

from csnotify import __version__

pytestmark = [
    pytest.mark.usefixtures("fast_retries"),
]

LIST_RESPONSE = FIXTURES / "api" / "listevents_response.json"
EVENT = json.dumps(
    {"id": "e1", "type": "VM.STOP", "created": "2026-11-25T10:00:00Z", "source": "stdin"}
)


def subscribe(cli, *args: str) -> str:
    r = cli("subscribe", *args, "--json")
    assert r.exit_code == 0, r.stderr
    data = r.json()
    return data.get("generated_key") or data["name"]


def events_file(tmp_path: Path, count: int, kind: str = "VM.START", level: str = "INFO") -> Path:
    path = tmp_path / "events.jsonl"
    lines = [
        json.dumps({"id": f"ev-{i:04d}", "type": kind, "level": level, "created": "2026-11-25T10:00:00Z",
                    "category": "ActionEvent", "resource_name": f"vm-{i}", "description": f"event {i}"})
        for i in range(count)
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def endpoint_state(cli, name: str, index: int = 0) -> dict:
    return cli("show", name, "--json").json()["endpoints"][index]


# -- webhooks ------------------------------------------------------------------------------


def test_signed_json_webhook(cli) -> None:
    with Receiver() as rx:
        key = subscribe(cli, "VM.*", "--to", rx.url + "/hook", "--key", "generate", "--name", "vm",
                        "--category", "*")  # every phase  # fmt: skip
        r = cli("dispatch", str(LIST_RESPONSE), "--json")
        assert r.exit_code == 0, r.stderr
        summary = r.json()
    assert summary["read"] == 3 and summary["delivered"] == 3 and summary["failed"] == 0
    assert len(rx.requests) == 3
    source = load_fixture("api/listevents_response.json")["listeventsresponse"]["event"]
    for req, item in zip(rx.requests, source, strict=True):
        body = req.json()
        assert body["subscription"] == "vm"
        assert body["event"]["id"] == item["id"] and body["event"]["raw"] == item
        assert req.headers["Content-Type"] == "application/json"
        assert req.headers["User-Agent"] == f"csnotify/{__version__}"
        assert spec_verify(key, req.headers, req.body)
        from standardwebhooks.webhooks import Webhook

        Webhook(key).verify(req.body, req.headers)
    assert len({r.headers["webhook-id"] for r in rx.requests}) == 3
    ep = endpoint_state(cli, "vm")
    assert ep["total_successes"] == 3 and ep["last_success_at"] is not None


def test_plain_key_verifies_with_its_whsec_form(cli) -> None:
    with Receiver() as rx:
        subscribe(cli, "VM.*", "--to", rx.url, "--key", "correct horse battery", "--name", "p")
        cli("dispatch", str(LIST_RESPONSE))
    whsec = cli("show", "p", "--reveal", "--json").json()["key_whsec"]
    from standardwebhooks.webhooks import Webhook

    for req in rx.requests:
        Webhook(whsec).verify(req.body, req.headers)
        assert spec_verify(whsec, req.headers, req.body)


def test_cloudevents_format(cli) -> None:
    with Receiver() as rx:
        subscribe(cli, "VM.START", "--to", rx.url, "--format", "cloudevents")
        cli("dispatch", str(LIST_RESPONSE))
    body = rx.requests[0].json()
    assert rx.requests[0].headers["Content-Type"] == "application/cloudevents+json"
    assert body["specversion"] == "1.0"
    assert body["type"] == "org.apache.cloudstack.VM.START"
    assert body["id"] == "9b2f6c1e-3d4a-4b5c-8d9e-0f1a2b3c4d5e"
    assert body["time"] == "2024-05-14T10:22:31Z"
    assert body["data"]["resource_name"] == "web-01"
    assert "webhook-signature" not in rx.requests[0].headers  # no key, no signature


def test_cloudstack_format_is_byte_compatible(cli) -> None:
    """A receiver written for CloudStack 4.20's webhooks gets what CloudStack sends."""
    sample = load_fixture("webhook/cloudstack_webhook_delivery.json")
    capture = FIXTURES / "amqp" / "ActionEvent.json"  # the same event, off the bus
    with Receiver() as rx:
        subscribe(
            cli,
            "VM.*",
            "--to",
            rx.url,
            "--format",
            "cloudstack",
            "--key",
            sample["secret_key_used"],
        )
        r = cli("dispatch", str(capture))
        assert r.exit_code == 0, r.stderr
    (req,) = rx.requests
    assert req.body.decode() == sample["body_raw"]
    for name in ("X-CS-Event-ID", "X-CS-Event", "X-CS-Signature", "Content-Type", "Content-Length"):
        if name == "X-CS-Event-ID":
            continue  # bus messages carry no id; ours is derived from the message
        assert req.headers[name] == sample["headers"][name], name
    assert req.headers["User-Agent"].startswith(sample["headers"]["User-Agent"])
    assert "webhook-signature" not in req.headers


def test_retries_keep_the_webhook_id(cli) -> None:
    answers = iter([Answer(500, b"boom"), Answer(503), Answer(200)])
    with Receiver(lambda _r: next(answers)) as rx:
        subscribe(cli, "*", "--to", rx.url, "--key", "k", "--name", "r")
        r = cli("dispatch", "-", input=EVENT)
        assert r.exit_code == 0, r.stderr
    assert len(rx.requests) == 3
    assert len({req.headers["webhook-id"] for req in rx.requests}) == 1
    (row,) = cli("deliveries", "r", "--json").json()
    assert row["status"] == "delivered" and row["attempts"] == 3 and row["http_status"] == 200
    ep = endpoint_state(cli, "r")
    assert ep["total_successes"] == 1 and ep["consecutive_failures"] == 0


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_errors_are_not_retried(cli, status: int) -> None:
    with Receiver(lambda _r: Answer(status, b"nope")) as rx:
        subscribe(cli, "*", "--to", rx.url, "--name", "c")
        cli("dispatch", "-", input=EVENT, expect=1)
    assert len(rx.requests) == 1
    (row,) = cli("deliveries", "c", "--json").json()
    assert row["status"] == "failed" and row["error"] == f"HTTP {status}: nope"


@pytest.mark.parametrize("status", [408, 429, 500, 502])
def test_retryable_statuses_are_retried(cli, status: int) -> None:
    with Receiver(lambda _r: Answer(status, b"busy")) as rx:
        subscribe(cli, "*", "--to", rx.url, "--name", "c", "--key", "generate")
        r = cli("dispatch", "-", input=EVENT, expect=1)  # a failed delivery fails the dispatch
    assert r.exit_code == 1 and "0 delivered, 1 failed" in r.stdout
    assert len(rx.requests) == 3  # the whole schedule (fast_retries: three attempts)
    assert len({req.headers["webhook-id"] for req in rx.requests}) == 1  # one message, resent
    (row,) = cli("deliveries", "c", "--json").json()
    assert (row["status"], row["attempts"], row["http_status"]) == ("failed", 3, status)
    assert row["error"] == f"HTTP {status}: busy"
    assert row["webhook_id"] == rx.requests[0].headers["webhook-id"]


def test_retry_after_is_honoured(cli) -> None:
    answers = iter([Answer(429, headers={"Retry-After": "1"}), Answer(200)])
    with Receiver(lambda _r: next(answers)) as rx:
        subscribe(cli, "*", "--to", rx.url)
        cli("-c", "delivery.retry_schedule=0s,0.05s,5s", "dispatch", "-", input=EVENT)
    assert len(rx.requests) == 2
    assert rx.requests[1].at - rx.requests[0].at >= 0.95


def test_retry_after_is_capped_by_the_last_step_of_the_schedule(cli) -> None:
    answers = iter([Answer(503, headers={"Retry-After": "3600"}), Answer(200)])
    with Receiver(lambda _r: next(answers)) as rx:
        subscribe(cli, "*", "--to", rx.url)
        cli("-c", "delivery.retry_schedule=0s,0.2s", "dispatch", "-", input=EVENT)
    assert len(rx.requests) == 2
    assert rx.requests[1].at - rx.requests[0].at < 2


def test_dispatch_a_json_array(cli) -> None:
    items = load_fixture("api/listevents_response.json")["listeventsresponse"]["event"]
    with Receiver() as rx:
        subscribe(cli, "*", "--to", rx.url, "--category", "*")
        r = cli("dispatch", "-", "--json", input=json.dumps(items))
    assert r.json()["delivered"] == 3
    assert [b["event"]["id"] for b in rx.bodies()] == [i["id"] for i in items]


def test_gone_switches_the_endpoint_off_at_once(cli, tmp_path: Path) -> None:
    with Receiver(lambda _r: Answer(410, b"unsubscribed")) as rx:
        subscribe(cli, "*", "--to", rx.url, "--name", "g")
        r = cli("dispatch", str(events_file(tmp_path, 3)), expect=1)
    assert len(rx.requests) == 1  # no retry, and the next events are not sent
    ep = endpoint_state(cli, "g")
    assert ep["enabled"] is False
    assert "410 Gone" in ep["disabled_reason"]
    assert "switched off" in r.stderr


FAILURES = {
    "timeout": (lambda url: url, Answer(200, delay=3), "timed out after 0.5 s"),
    "refused": (lambda _url: f"http://127.0.0.1:{closed_port()}/", None, "cannot connect"),
    "closed midway": (lambda url: url, Answer(200, body=b"x" * 1000, close_midway=True), "closed in the middle"),
    "dropped": (lambda url: url, Answer(drop=True), "closed the connection without answering"),
    "redirect": (lambda url: url, Answer(302, headers={"Location": "http://127.0.0.1:1/"}), "redirects are not followed"),
}  # fmt: skip


@pytest.mark.parametrize("case", FAILURES, ids=FAILURES.keys())
def test_transport_failures_are_counted(cli, case: str) -> None:
    make_url, answer, message = FAILURES[case]
    with Receiver(lambda _r: answer or Answer()) as rx:
        subscribe(cli, "*", "--to", make_url(rx.url), "--name", "f")
        r = cli(
            "-c",
            "delivery.timeout=0.5",
            "-c",
            "delivery.retry_schedule=0s,0.05s",
            "dispatch",
            "-",
            input=EVENT,
            expect=1,
        )
        assert r.exit_code == 1  # a failed delivery is a failed dispatch
        assert "0 delivered, 1 failed" in r.stdout
    (row,) = cli("deliveries", "f", "--json").json()
    assert row["status"] == "failed"
    assert message in row["error"]
    ep = endpoint_state(cli, "f")
    assert ep["total_failures"] == 1 and ep["consecutive_failures"] == 1
    assert ep["last_error"] == row["error"] and ep["last_error_at"]


def test_huge_and_trickling_responses_do_not_hold_up_delivery(cli) -> None:
    """A 20 MB answer is read no further than its first 64 KiB: a success, its connection
    dropped. A 2xx whose body trickles (a byte a second, for longer than the test lives)
    fails once its body has not ended in time; neither holds up the endpoint beside them,
    nor the dispatch."""
    huge = Answer(200, body=b"y" * (20 * 1024 * 1024))
    trickling = Answer(200, body=b"z" * 100_000, trickle=1.0)
    with (
        Receiver(lambda _r: huge) as big,
        Receiver(lambda _r: trickling) as slow,
        Receiver() as fast,
    ):
        subscribe(cli, "*", "--to", big.url, "--name", "huge")
        subscribe(cli, "*", "--to", slow.url, "--name", "trickle")
        subscribe(cli, "*", "--to", fast.url, "--name", "fast")
        r = cli("-c", "delivery.retry_schedule=0s", "-c", "delivery.timeout=10", "dispatch", "-",
                "--json", input=EVENT, expect=1)  # fmt: skip
        assert (r.json()["delivered"], r.json()["failed"]) == (2, 1)
        assert len(slow.requests) == 1 and len(fast.requests) == 1 and len(big.requests) == 1
    (big_row,) = cli("deliveries", "huge", "--json").json()
    assert (big_row["status"], big_row["http_status"]) == ("delivered", 200)
    (slow_row,) = cli("deliveries", "trickle", "--json").json()
    assert slow_row["status"] == "failed" and "did not end within" in slow_row["error"]
    assert endpoint_state(cli, "fast")["total_successes"] == 1


def test_auto_disable_after_consecutive_failures_and_admin_is_told(cli, tmp_path: Path) -> None:
    with Receiver(lambda _r: Answer(500, b"down")) as bad, Receiver() as admin:
        subscribe(cli, "*", "--to", bad.url, "--name", "flaky")
        cli("config", "set", "failures.disable_after", "3")
        cli("config", "set", "failures.notify", admin.url)
        r = cli(
            "-c",
            "delivery.retry_schedule=0s",
            "dispatch",
            str(events_file(tmp_path, 5)),
            "--json",
            expect=1,
        )
        summary = r.json()
    assert len(bad.requests) == 3
    # the other two wait in the store for the endpoint to be enabled again
    assert summary["failed"] == 3 and summary["waiting"] == 2 and summary["dropped"] == 0
    assert summary["switched_off"] == [f"flaky -> {bad.url}"]
    assert "switched off endpoint flaky" in r.stderr
    ep = endpoint_state(cli, "flaky")
    assert ep["enabled"] is False
    assert ep["disabled_reason"] == "3 consecutive failed deliveries; last: HTTP 500: down"
    assert ep["consecutive_failures"] == 3
    (note,) = admin.bodies()
    assert note["event"]["type"] == "CSNOTIFY.ENDPOINT.DISABLED"
    assert (
        "flaky" in note["event"]["description"] and "HTTP 500: down" in note["event"]["description"]
    )
    # enable brings it back with counters reset, and the next run sends what waited
    assert cli("enable", "flaky").exit_code == 0
    ep = endpoint_state(cli, "flaky")
    assert ep["enabled"] is True and ep["consecutive_failures"] == 0 and ep["total_failures"] == 0
    with Receiver() as good:
        cli("update", "flaky", "--to", good.url)
        assert cli("dispatch", "-", input="").exit_code == 0
    assert good.requests == []  # a replaced endpoint takes its pending deliveries with it


def test_success_resets_the_consecutive_count(cli, tmp_path: Path) -> None:
    answers = iter([Answer(500), Answer(500), Answer(200), Answer(500)])
    with Receiver(lambda _r: next(answers)) as rx:
        subscribe(cli, "*", "--to", rx.url, "--name", "s")
        cli("-c", "delivery.retry_schedule=0s", "dispatch", str(events_file(tmp_path, 4)), expect=1)
    ep = endpoint_state(cli, "s")
    assert ep["consecutive_failures"] == 1
    assert ep["total_failures"] == 3 and ep["total_successes"] == 1


def test_delivery_log_is_bounded_per_endpoint(cli, tmp_path: Path, db_file: Path) -> None:
    with Receiver() as rx:
        subscribe(cli, "*", "--to", rx.url, "--to", rx.url + "/second", "--name", "b")
        cli("config", "set", "log.max_per_endpoint", "5")
        cli("dispatch", str(events_file(tmp_path, 12)))
    conn = sqlite3.connect(db_file)
    counts = conn.execute(
        "SELECT endpoint_id, COUNT(*) FROM deliveries GROUP BY endpoint_id"
    ).fetchall()
    assert sorted(c for _, c in counts) == [5, 5]
    newest = conn.execute("SELECT event_id FROM deliveries ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert newest == "ev-0011"
    assert endpoint_state(cli, "b")["total_successes"] == 12  # counters are not bounded


def test_each_endpoint_keeps_event_order(cli, tmp_path: Path) -> None:
    import random

    rng = random.Random(7)
    with Receiver(lambda _r: Answer(200, delay=rng.random() * 0.01)) as a, Receiver() as b:
        subscribe(cli, "*", "--to", a.url, "--to", b.url)
        cli("dispatch", str(events_file(tmp_path, 40)))
    expected = [f"ev-{i:04d}" for i in range(40)]
    assert [x["event"]["id"] for x in a.bodies()] == expected
    assert [x["event"]["id"] for x in b.bodies()] == expected


def test_a_slow_endpoint_does_not_hold_up_the_others(cli, tmp_path: Path) -> None:
    with Receiver(lambda _r: Answer(200, delay=1.0)) as slow, Receiver() as fast:
        subscribe(cli, "*", "--to", slow.url, "--name", "slow")
        subscribe(cli, "*", "--to", fast.url, "--name", "fast")
        cli("-c", "delivery.timeout=5", "dispatch", str(events_file(tmp_path, 4)))
    assert len(fast.requests) == 4 and len(slow.requests) == 4
    # all four fast deliveries were made before the slow endpoint got its second event
    assert fast.requests[-1].at < slow.requests[1].at


# -- email, SMS, other Apprise services, commands -----------------------------------------


def test_email_through_a_real_smtp_server(cli, tmp_path: Path) -> None:
    # Apprise spaces messages from one email endpoint 5.5 s apart (its own throttle), so
    # each endpoint gets one event here.
    item = load_fixture("api/listevents_response.json")["listeventsresponse"]["event"][0]
    with SmtpSink() as smtp:
        subscribe(cli, "VM.*", "--to", smtp.uri(), "--name", "mail")
        subscribe(cli, "VM.START", "--to", smtp.uri("custom@example.com"), "--name", "custom",
                  "--title", "{level}: {type} of {resource_name} by {account}", "--body", "{description}")  # fmt: skip
        r = cli("dispatch", "-", input=json.dumps(item))
        assert r.exit_code == 0, r.stderr
    by_rcpt = {tuple(to): m for _f, to, m in smtp.messages}
    default, custom = by_rcpt[("oncall@example.com",)], by_rcpt[("custom@example.com",)]
    assert default["Subject"] == "[CloudStack] VM.START Completed: web-01"
    assert (
        default["From"].endswith("<cloudstack@example.com>")
        or "cloudstack@example.com" in default["From"]
    )
    assert custom["Subject"] == "INFO: VM.START of web-01 by admin"
    assert b"Successfully completed starting Vm. Vm Id: 42" in _text_of(default)
    assert _text_of(custom).strip() == b"Successfully completed starting Vm. Vm Id: 42"
    assert endpoint_state(cli, "mail")["total_successes"] == 1


EVIL = '<a href="http://evil.example/login">reset your password</a>'


def _parts(msg) -> dict[str, str]:
    return {
        part.get_content_type(): part.get_payload(decode=True).decode().replace("\r\n", "\n")
        for part in msg.walk()
        if not part.is_multipart()
    }


def test_email_is_plain_text_and_markup_in_events_stays_text(cli) -> None:
    # A tenant names a volume with HTML in it; the on-call must not get a live link, and
    # the template's line breaks must survive in both the plain and the HTML part.
    event = {"id": "ev-html", "type": "VOLUME.CREATE", "level": "INFO", "state": "Completed",
             "created": "2026-11-25T10:00:00Z", "resource_name": EVIL,
             "description": "line one & <b>bold</b>\nline two", "source": "stdin"}  # fmt: skip
    body = "{resource_name}\n{description}\nlast line"
    with SmtpSink() as smtp:
        subscribe(cli, "*", "--to", smtp.uri("text@example.com"), "--name", "text",
                  "--body", body)  # fmt: skip
        subscribe(cli, "*", "--to", smtp.uri("html@example.com") + "&format=html",
                  "--name", "html", "--body", body)  # fmt: skip
        r = cli("dispatch", "-", input=json.dumps(event))
        assert r.exit_code == 0, r.stderr
    by_rcpt = {tuple(to): m for _f, to, m in smtp.messages}
    expected = f"{EVIL}\nline one & <b>bold</b>\nline two\nlast line"
    text_only = _parts(by_rcpt[("text@example.com",)])
    assert list(text_only) == ["text/plain"]  # sent as text, no HTML part to click in
    assert text_only["text/plain"].strip() == expected
    both = _parts(by_rcpt[("html@example.com",)])
    assert sorted(both) == ["text/html", "text/plain"]
    html = both["text/html"].replace("&nbsp;", " ")
    assert "<a " not in html and "<b>" not in html
    assert "&lt;a href=&quot;http://evil.example/login&quot;&gt;" in html
    assert "line one &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert html.count("<br") == 3  # four lines, three breaks
    assert both["text/plain"].strip() == expected


def test_chat_markup_in_events_is_escaped(cli) -> None:
    # Rocket.Chat renders Markdown: a resource name written as a Markdown link must arrive
    # as literal text, in the title as in the body, and the body's lines must stay lines.
    with Receiver() as rx:
        port = rx.server.server_address[1]
        uri = f"rocket://hookid/tok@127.0.0.1:{port}/%23ops?mode=webhook"
        subscribe(cli, "*", "--to", uri, "--name", "chat",
                  "--body", "{resource_name}\n{description}")  # fmt: skip
        event = {"id": "ev-md", "type": "VM.CREATE", "created": "2026-11-25T10:00:00Z",
                 "resource_name": "[login](http://evil.example)", "description": "**now**",
                 "source": "stdin"}  # fmt: skip
        r = cli("dispatch", "-", input=json.dumps(event))
        assert r.exit_code == 0, r.stderr
    (req,) = rx.requests
    title, *lines = req.json()["text"].split("\n")
    link = "\\[login\\]\\(http://evil\\.example\\)"
    assert title.endswith(link)
    assert lines == [link, "\\*\\*now\\*\\*"]


@pytest.mark.skipif(
    shutil.which("openssl") is None, reason="openssl is needed for a test certificate"
)
def test_email_over_starttls(cli, tmp_path: Path) -> None:
    item = load_fixture("api/listevents_response.json")["listeventsresponse"]["event"][0]
    with SmtpSink(tls_dir=tmp_path) as smtp:
        subscribe(cli, "VM.*", "--to", smtp.uri(), "--name", "tls")
        r = cli("dispatch", "-", input=json.dumps(item))
        assert r.exit_code == 0, r.stderr
    ((_sender, rcpt, msg),) = smtp.messages
    assert rcpt == ["oncall@example.com"]
    assert msg["Subject"] == "[CloudStack] VM.START Completed: web-01"


def _text_of(msg) -> bytes:
    part = msg
    while part.is_multipart():
        part = part.get_payload()[0]
    return part.get_payload(decode=True)


def test_sms_through_an_smseagle_gateway(cli) -> None:
    with SmsEagleGateway() as gw:
        subscribe(cli, "ALERT.*", "--to", gw.uri(), "--name", "sms")
        alert = FIXTURES / "amqp" / "AlertEvent.json"
        r = cli("dispatch", str(alert))
        assert r.exit_code == 0, r.stderr
    (text,) = gw.texts()
    assert text.startswith("[WARN] ALERT.MEMORY: System Alert:")
    assert "Low Available Memory" in text
    assert len(text) <= 160
    assert gw.requests[0].json()["params"]["access_token"] == "tok123"
    assert gw.requests[0].json()["params"]["to"] == "+15551230000"


def test_other_apprise_services_work_unchanged(cli) -> None:
    """Apprise's generic json:// service, pointed at a local receiver."""
    with Receiver() as rx:
        uri = rx.url.replace("http://", "json://") + "/notify"
        subscribe(cli, "VM.START", "--to", uri, "--name", "jsonsvc", "--category", "*")
        cli("dispatch", str(LIST_RESPONSE))
    assert len(rx.requests) == 3
    body = rx.requests[0].json()
    assert body["title"].startswith("[CloudStack] VM.START")
    assert rx.requests[0].path == "/notify"


HOOK_PROGRAM = """#!{python}
import json, os, sys
event = json.load(sys.stdin)
with open({out!r}, "a") as fh:
    fh.write(json.dumps({{"type": os.environ["CSNOTIFY_EVENT_TYPE"], "id": os.environ["CSNOTIFY_EVENT_ID"],
                          "argv": sys.argv[1:], "event": event}}) + "\\n")
if event["resource_name"] == "vm-2":
    sys.stderr.write("dns update refused for vm-2\\n")
    sys.exit(3)
if event["resource_name"] == "vm-3":
    import time; time.sleep(30)
"""


def test_command_endpoint(cli, tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    prog = tmp_path / "dns-update"
    prog.write_text(HOOK_PROGRAM.format(python=sys.executable, out=str(out)))
    prog.chmod(0o755)
    canary = tmp_path / "canary"
    subscribe(
        cli, "VM.*", "--to", f"cmd:{prog} --zone 'example org' ; touch {canary}", "--name", "dns"
    )
    r = cli(
        "-c",
        "delivery.timeout=1",
        "-c",
        "delivery.retry_schedule=0s",
        "dispatch",
        str(events_file(tmp_path, 4)),
        expect=1,
    )
    assert r.exit_code == 1  # two of the four failed
    calls = [json.loads(line) for line in out.read_text().splitlines()]
    assert [c["id"] for c in calls] == ["ev-0000", "ev-0001", "ev-0002", "ev-0003"]
    assert calls[0]["type"] == "VM.START"
    assert calls[0]["argv"] == ["--zone", "example org", ";", "touch", str(canary)]  # no shell
    assert calls[0]["event"]["resource_name"] == "vm-0"
    assert not canary.exists()
    rows = {row["event_id"]: row for row in cli("deliveries", "dns", "--json").json()}
    assert rows["ev-0002"]["status"] == "failed"
    assert rows["ev-0002"]["error"] == f"{prog}: exit status 3: dns update refused for vm-2"
    assert "timed out after 1 s" in rows["ev-0003"]["error"]
    assert rows["ev-0000"]["status"] == "delivered"


# -- dispatch input, test, verify, deliveries ---------------------------------------------


def test_bad_lines_are_reported_and_the_rest_delivered(cli) -> None:
    good = {"id": "g1", "type": "VM.START", "created": "2026-11-25T10:00:00Z", "source": "stdin"}
    text = "\n".join([json.dumps(good), "{oops", json.dumps({**good, "id": "g2"}), "42", ""])
    with Receiver() as rx:
        subscribe(cli, "*", "--to", rx.url)
        r = cli("dispatch", "-", input=text, expect=1)
    assert r.exit_code == 1
    assert "csnotify: line 2: invalid JSON" in r.stderr
    assert "csnotify: line 4: expected a JSON object, got int" in r.stderr
    assert "read 4: 2 events, 2 matched; 2 delivered, 0 failed, 2 skipped" in r.stdout
    assert [b["event"]["id"] for b in rx.bodies()] == ["g1", "g2"]


def test_bus_bodies_with_a_routing_key(cli) -> None:
    sample = load_fixture("amqp/UsageEvent.json")
    with Receiver() as rx:
        subscribe(cli, "VM.START", "--to", rx.url, "--where", "category=UsageEvent")
        r = cli("dispatch", "-", "--routing-key", sample["routing_key"], input=sample["body_raw"])
        assert r.exit_code == 0, r.stderr
    (body,) = rx.bodies()
    assert body["event"]["category"] == "UsageEvent"
    assert body["event"]["resource_id"] == sample["body"]["id"]


def test_test_command(cli) -> None:
    with Receiver() as ok, Receiver(lambda _r: Answer(500, b"broken")) as bad:
        subscribe(cli, "VM.*", "--to", ok.url, "--to", bad.url, "--key", "generate", "--name", "t")
        r = cli("test", "t", "--json", expect=1)
        assert r.exit_code == 1
        results = r.json()
    assert [x["ok"] for x in results] == [True, False]
    assert results[1]["error"] == "HTTP 500: broken" and results[1]["status"] == 500
    assert ok.bodies()[0]["event"]["type"] == "VM.TEST"
    assert len(bad.requests) == 1  # one attempt, now
    assert endpoint_state(cli, "t", 1)["total_failures"] == 0  # not counted
    with Receiver() as ok2:
        subscribe(cli, "*", "--to", ok2.url, "--name", "t2")
        r = cli("test", "t2")
    assert r.exit_code == 0 and "ok" in r.stdout


def test_verify_command(cli, tmp_path: Path) -> None:
    with Receiver() as rx:
        key = subscribe(cli, "VM.*", "--to", rx.url, "--key", "generate")
        cli("dispatch", str(LIST_RESPONSE))
    req = rx.requests[0]
    headers = tmp_path / "headers.txt"
    headers.write_text(
        "POST /hook HTTP/1.1\n" + "\n".join(f"{k}: {v}" for k, v in req.headers.items())
    )
    body = tmp_path / "body.json"
    body.write_bytes(req.body)
    r = cli("verify", "--key", key, "--headers", str(headers), str(body))
    assert r.exit_code == 0, r.stderr
    assert "valid standard-webhooks signature" in r.stdout
    body.write_bytes(req.body.replace(b"VM.START", b"VM.STOP"))
    r = cli("verify", "--key", key, "--headers", str(headers), str(body), expect=1)
    assert r.exit_code == 1 and "does not match" in r.stderr
    r = cli("verify", "--key", key, "-H", f"webhook-id: {req.headers['webhook-id']}",
            "-H", "webhook-timestamp: 1000", "-H", f"webhook-signature: {req.headers['webhook-signature']}",
            str(body), expect=1)  # fmt: skip
    assert r.exit_code == 1 and "off (tolerance" in r.stderr


def test_verify_cloudstack_signature(cli, tmp_path: Path) -> None:
    sample = load_fixture("webhook/cloudstack_webhook_delivery.json")
    r = cli("verify", "--key", sample["secret_key_used"], "--scheme", "cloudstack",
            "-H", f"X-CS-Signature: {sample['headers']['X-CS-Signature']}", "-",
            input=sample["body_raw"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "valid cloudstack signature" in r.stdout


def test_deliveries_command(cli, tmp_path: Path) -> None:
    answers = iter([Answer(200), Answer(400)])
    lock = threading.Lock()

    def script(_r):
        with lock:
            return next(answers)

    with Receiver(script) as rx:
        subscribe(cli, "*", "--to", rx.url, "--name", "d")
        cli("dispatch", str(events_file(tmp_path, 2)), expect=1)
    rows = cli("deliveries", "--json").json()
    assert [r["status"] for r in rows] == ["failed", "delivered"]  # newest first
    assert set(rows[0]) >= {"at", "subscription", "endpoint", "event_id", "event_type", "status",
                            "attempts", "http_status", "latency_ms", "error", "webhook_id"}  # fmt: skip
    assert [r["event_id"] for r in cli("deliveries", "d", "--failed", "--json").json()] == [
        "ev-0001"
    ]
    text = cli("deliveries").stdout
    assert "HTTP 400" in text
    assert cli("deliveries", "nope", expect=2).exit_code == 2


@pytest.mark.skipif(
    shutil.which("openssl") is None, reason="openssl is needed for a test certificate"
)
def test_tls_errors_are_counted(cli, tmp_path: Path) -> None:
    import ssl
    import subprocess as sp

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    sp.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)  # fmt: skip
    with Receiver() as rx:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        rx.server.socket = context.wrap_socket(rx.server.socket, server_side=True)
        url = rx.url.replace("http://", "https://")
        subscribe(cli, "*", "--to", url, "--name", "tls")
        cli("-c", "delivery.retry_schedule=0s", "dispatch", "-", input=EVENT, expect=1)
    (row,) = cli("deliveries", "tls", "--json").json()
    assert row["status"] == "failed"
    assert "certificate" in row["error"].lower()  # self-signed: refused, never sent in clear
    assert rx.requests == []


def test_trickling_response_times_out_and_others_go_on(cli, tmp_path: Path) -> None:
    slow = Answer(200, body=b"x" * 40, trickle=0.1)  # 4 s to send a 40-byte body
    with Receiver(lambda _r: slow) as trickle, Receiver() as fast:
        subscribe(cli, "*", "--to", trickle.url, "--name", "trickle")
        subscribe(cli, "*", "--to", fast.url, "--name", "fast")
        cli(
            "-c",
            "delivery.timeout=1",
            "-c",
            "delivery.retry_schedule=0s",
            "dispatch",
            str(events_file(tmp_path, 3)),
            expect=1,
        )
    rows = cli("deliveries", "trickle", "--json").json()
    assert [r["status"] for r in rows] == ["failed"] * 3
    assert all("timed out" in r["error"] for r in rows)
    assert len(fast.requests) == 3 and endpoint_state(cli, "fast")["total_successes"] == 3


def test_control_characters_never_reach_the_terminal(cli, tmp_path: Path) -> None:
    # A program's stderr becomes the recorded error; an event's id and type are shown by
    # listen --dry-run. Escape sequences in them must be shown, not acted on.
    prog = tmp_path / "noisy"
    prog.write_text(
        f"#!{sys.executable}\nimport sys\nsys.stderr.write('\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m')\nsys.exit(1)\n"
    )
    prog.chmod(0o755)
    # a template is shown by show: its escape sequences too (issue 18, point 7)
    subscribe(cli, "*", "--to", f"cmd:{prog}", "--name", "noisy", "--title", "\x1b[5m{type}")
    event = {"id": "ev\x1b[31m-1", "type": "VM.START\u202e", "created": "2026-11-25T10:00:00Z"}
    outputs = [
        cli("-c", "delivery.retry_schedule=0s", "dispatch", "-", input=json.dumps(event), expect=1)
    ]
    for args in (["deliveries"], ["deliveries", "--json"], ["show", "noisy"], ["test", "noisy"],
                 ["status"], ["listen", "--source", "stdin", "--dry-run", "--print"]):  # fmt: skip
        failing = args[0] == "test"  # the program exits 1: test says so
        outputs.append(cli(*args, input=json.dumps(event) + "\n", expect=1 if failing else 0))
    text = "".join(r.stdout + r.stderr for r in outputs)
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in text
    assert "\\u001b[2J" in text and "\\u001b[31m-1" in text and "\\u202e" in text
    assert "\\u001b[5m{type}" in text


def test_a_lone_surrogate_is_a_counted_rejection_not_a_silent_drop(cli) -> None:
    good = '{"id": "ok", "type": "VM.START", "created": "2026-11-25T10:00:00Z", "description": "\\ud83d\\ude00"}'
    bad = '{"id": "bad", "type": "VM.START", "created": "2026-11-25T10:00:00Z", "description": "x \\ud800 y"}'
    with Receiver() as rx:
        subscribe(cli, "*", "--to", rx.url, "--name", "s")
        r = cli("dispatch", "-", "--json", input=f"{good}\n{bad}\n", expect=1)
        assert r.exit_code == 1
        summary = r.json()
        assert summary["delivered"] == 1 and summary["skipped"] == 1
        assert summary["rejected"] == [
            "line 2: invalid Unicode: a lone surrogate \\ud800 (half of a UTF-16 pair) in the event"
        ]
        r = cli("listen", "--source", "stdin", input=f"{bad}\n", expect=1)
        assert r.exit_code == 1 and "line 1: invalid Unicode" in r.stderr
        # one document (an array, a listEvents response): the item, not the document
        listed = good.replace('"ok"', '"ok2"').replace('"type"', '"level": "INFO", "type"')
        for doc, where in ((f"[{bad}, {good.replace('ok', 'ok1')}]", "item 1"),
                           (f'{{"listeventsresponse": {{"event": [{listed}, {bad}]}}}}',
                            "event 2")):  # fmt: skip
            r = cli("dispatch", "-", "--json", input=doc, expect=1)
            assert r.exit_code == 1, r.stdout + r.stderr
            assert r.json()["delivered"] == 1
            assert r.json()["rejected"] == [f"{where}: invalid Unicode: a lone surrogate \\ud800"
                                            " (half of a UTF-16 pair) in the event"]  # fmt: skip
    assert [b["event"]["description"] for b in rx.bodies()] == ["\U0001f600"] * 3
    assert cli("status", "--json").json()["listeners"][0]["rejected"] == 1


def test_a_program_that_does_not_read_its_input_fails_by_its_exit_status(cli) -> None:
    false = shutil.which("false") or "/bin/false"
    subscribe(cli, "*", "--to", f"cmd:{false}", "--name", "nope")
    big = "x" * 200_000  # more than a pipe holds: the write meets a closed pipe
    events = "".join(
        json.dumps({"id": f"b{i}", "type": "VM.START", "created": "2026-11-25T10:00:00Z",
                    "description": big}) + "\n"
        for i in range(3)
    )  # fmt: skip
    r = cli("-c", "delivery.retry_schedule=0s", "dispatch", "-", input=events, expect=1)
    assert r.exit_code == 1
    assert "unexpectedly" not in r.stderr, r.stderr
    rows = cli("deliveries", "nope", "--json").json()
    assert [row["error"] for row in rows] == [f"{false}: exit status 1"] * 3
