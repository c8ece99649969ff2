"""The webhook channel's HTTP client (csnotify/channels/http.py) against real sockets that
answer byte for byte as scripted: every way an HTTP/1.1 answer can be framed, kept-alive
connections that the receiver closes, TLS with an untrusted certificate, Basic auth from
the URI. Through the real CLI (`dispatch`, then `deliveries`)."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from receivers import self_signed

pytestmark = [pytest.mark.usefixtures("fast_retries")]

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class RawServer:
    """A TCP server on 127.0.0.1. ``answer(conn_index, request_index, head, body)``
    returns the bytes to send back, or None to close the connection without answering."""

    def __init__(
        self,
        answer: Callable[[int, int, bytes, bytes], bytes | None],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.answer = answer
        self.tls = tls
        self.requests: list[tuple[int, bytes, bytes]] = []  # connection, head, body
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> RawServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def url(self, path: str = "/hook", scheme: str = "http", userinfo: str = "") -> str:
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            index = self.connections
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn, index), daemon=True).start()

    def _handle(self, conn: socket.socket, index: int) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            data = b""
            n = 0
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, data = data.split(b"\r\n\r\n", 1)
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(data) < length:
                    data += conn.recv(65536)
                body, data = data[:length], data[length:]
                self.requests.append((index, head, body))
                reply = self.answer(index, n, head, body)
                n += 1
                if reply is None:
                    return
                conn.sendall(reply)
                framed = b"content-length" in reply.lower() or b"chunked" in reply.lower()
                if b"connection: close" in reply.lower() or not framed:
                    return  # the close ends the answer
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()


def events(count: int) -> str:
    return "".join(
        json.dumps({"id": f"e{i}", "type": "VM.STOP", "created": "2026-11-25T10:00:00Z",
                    "resource_id": "vm-1", "source": "stdin"}) + "\n"
        for i in range(count)
    )  # fmt: skip


def dispatch(cli, url: str, count: int = 1, *settings: str):
    r = cli("subscribe", "VM.*", "--to", url, "--name", "h")
    assert r.exit_code == 0, r.stderr
    flags = [arg for s in settings for arg in ("-c", s)]
    return cli(*flags, "dispatch", "-", "--json", input=events(count), expect=None)


def delivered_rows(cli) -> list[dict]:
    return cli("deliveries", "h", "--json").json()


BIG = b"y" * (1024 * 1024)
FRAMINGS = {
    "content-length": OK,
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n",
    "ended by close": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it",
    "no content": b"HTTP/1.1 204 No Content\r\n\r\n",
    "100 continue first": b"HTTP/1.1 100 Continue\r\n\r\n" + OK,
    "body over the cap": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG) + BIG,
    "HTTP/1.0": b"HTTP/1.0 200 OK\r\n\r\nold",
}  # fmt: skip


@pytest.mark.parametrize("case", FRAMINGS, ids=FRAMINGS.keys())
def test_every_framing_of_a_2xx_is_a_delivery(cli, case: str) -> None:
    with RawServer(lambda *_: FRAMINGS[case]) as rx:
        r = dispatch(cli, rx.url(), 3)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert r.json()["delivered"] == 3
    assert len(rx.requests) == 3  # no silent repeats
    assert [row["status"] for row in delivered_rows(cli)] == ["delivered"] * 3


def test_a_kept_alive_connection_the_receiver_closed_is_tried_once_more(cli) -> None:
    # The first connection answers one request, then closes on the next without a word
    # (a server's keep-alive timeout racing the next request); the rest go on new ones.
    def answer(conn: int, n: int, _head: bytes, _body: bytes) -> bytes | None:
        return None if conn == 0 and n == 1 else OK

    with RawServer(answer) as rx:
        r = dispatch(cli, rx.url(), 3)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    rows = delivered_rows(cli)
    assert [(row["status"], row["attempts"]) for row in rows] == [("delivered", 1)] * 3
    assert rx.connections == 2
    ids = [json.loads(body)["event"]["id"] for _, _, body in rx.requests]
    assert ids == ["e0", "e1", "e1", "e2"]  # e1 reached the closing connection, then a new one


def test_a_fresh_connection_closed_without_an_answer_is_a_failed_attempt(cli) -> None:
    with RawServer(lambda *_: None) as rx:
        r = dispatch(cli, rx.url())
    assert r.exit_code == 1
    (row,) = delivered_rows(cli)
    assert row["status"] == "failed" and row["attempts"] == 3
    assert "closed the connection without answering" in row["error"]
    assert len(rx.requests) == 3  # one per attempt: no silent repeat on a new connection


def test_an_answer_that_is_not_http_is_a_failed_attempt(cli) -> None:
    with RawServer(lambda *_: b"SSH-2.0-OpenSSH_9.6\r\n") as rx:
        r = dispatch(cli, rx.url())
    assert r.exit_code == 1
    (row,) = delivered_rows(cli)
    assert row["status"] == "failed" and "not HTTP" in row["error"]


def test_endless_headers_are_refused(cli) -> None:
    flood = b"HTTP/1.1 200 OK\r\n" + (b"X-Junk: " + b"z" * 1000 + b"\r\n") * 100
    with RawServer(lambda *_: flood + b"Content-Length: 2\r\n\r\nok") as rx:
        r = dispatch(cli, rx.url())
    assert r.exit_code == 1
    (row,) = delivered_rows(cli)
    assert "headers are longer than" in row["error"]


def test_error_answers_keep_an_excerpt_and_retry_after(cli) -> None:
    reply = b"HTTP/1.1 503 Busy\r\nRetry-After: 0\r\nContent-Length: 11\r\n\r\nslow\r\n down"
    with RawServer(lambda *_: reply) as rx:
        r = dispatch(cli, rx.url())
    assert r.exit_code == 1
    (row,) = delivered_rows(cli)
    assert row["error"] == "HTTP 503: slow down"
    assert len(rx.requests) == 3


def test_user_info_becomes_basic_auth_and_paths_are_encoded(cli) -> None:
    with RawServer(lambda *_: OK) as rx:
        r = dispatch(cli, rx.url("/hooks/café?team=ops&x=1", userinfo="bot:s3cr%40t@"))
    assert r.exit_code == 0, r.stderr
    ((_, head, _),) = rx.requests
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /hooks/caf%C3%A9?team=ops&x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{rx.port}" in lines
    assert "Authorization: Basic Ym90OnMzY3JAdA==" in lines  # bot:s3cr@t


def test_an_untrusted_certificate_is_a_tls_error(cli, tmp_path: Path) -> None:
    with RawServer(lambda *_: OK, tls=self_signed(tmp_path, "127.0.0.1")) as rx:
        r = dispatch(cli, rx.url(scheme="https"))
    assert r.exit_code == 1
    (row,) = delivered_rows(cli)
    assert row["status"] == "failed"
    assert row["error"].startswith("TLS certificate error:"), row["error"]
    assert rx.requests == []  # nothing was sent over a connection it could not trust


def test_a_header_with_a_line_break_is_refused_not_sent() -> None:
    """The client itself refuses CR/LF in a header (the webhook channel cleans what it
    builds from events; this holds for whatever calls the client)."""
    import asyncio

    from csnotify.channels.http import Client, HTTPFailure

    async def post(headers: dict[str, str]) -> None:
        client = Client(limit=2, cap=1024)
        try:
            await client.post(rx.url(), b"{}", headers, timeout=5, body_timeout=2)
        finally:
            await client.close()

    with RawServer(lambda *_: OK) as rx:
        for bad in ({"X-A": "1\r\nX-Injected: 1"}, {"X-A": "1\nX-B: 2"}, {"X-A\r\nX-B": "1"}):
            with pytest.raises(HTTPFailure, match="line break"):
                asyncio.run(post(bad))
        asyncio.run(post({"X-A": "fine"}))
    assert len(rx.requests) == 1 and b"X-A: fine" in rx.requests[0][1]


def test_a_pinned_address_is_where_the_connection_goes_whatever_the_name_resolves_to() -> None:
    """DNS rebinding: an API-made subscription's host is checked, then connected to. The
    client connects to the checked address it is given (the Host header still names the
    URL's host), so a resolver that answers otherwise a moment later is never asked; the
    connection is kept for the next delivery to the same address."""
    import asyncio

    from csnotify.channels.guard import check
    from csnotify.channels.http import Client, ConnectFailure
    from csnotify.policy import parse_networks

    async def post(url: str, address: str | None) -> int:
        client = Client(limit=2, cap=1024)
        try:
            response = await client.post(url, b"{}", {}, timeout=5, body_timeout=2,
                                         address=address)  # fmt: skip
            again = await client.post(url, b"{}", {}, timeout=5, body_timeout=2,
                                      address=address)  # fmt: skip
            assert again.status == response.status
            return response.status
        finally:
            await client.close()

    with RawServer(lambda *_: OK) as rx:
        url = f"http://csnotify-rebound.invalid:{rx.port}/hook"
        with pytest.raises(ConnectFailure):  # the name resolves nowhere
            asyncio.run(post(url, None))
        assert asyncio.run(post(url, "127.0.0.1")) == 200
        why, address = asyncio.run(check(rx.url(), parse_networks("127.0.0.0/8")))
        assert (why, address) == (None, "127.0.0.1")
        why, address = asyncio.run(check(rx.url(), ()))
        assert address is None and "private, loopback or link-local" in (why or "")
    assert len(rx.requests) == 2
    assert all(f"Host: csnotify-rebound.invalid:{rx.port}".encode() in head
               for _conn, head, _body in rx.requests)  # fmt: skip
    assert rx.requests[0][0] == rx.requests[1][0]  # kept alive for the same pinned address


def test_headers_cut_short_are_named_as_such(cli) -> None:
    with RawServer(lambda *_: b"HTTP/1.1 200 OK\r\nContent-Le") as rx:
        r = dispatch(cli, rx.url())
    assert r.exit_code == 1
    (row,) = delivered_rows(cli)
    assert "closed in the middle of the answer's headers" in row["error"]


STALLED = b"HTTP/1.1 %d X\r\nRetry-After: 0\r\nContent-Length: 100\r\n\r\nonly ten b"


def test_a_2xx_whose_body_stalls_fails_with_what_happened(cli) -> None:
    with RawServer(lambda *_: STALLED % 200) as rx:
        r = dispatch(cli, rx.url(), 1, "delivery.retry_schedule=0s", "delivery.timeout=5")
    assert r.exit_code == 1
    (row,) = delivered_rows(cli)
    assert row["error"] == "the answer's body did not end within 2 s"  # not the 10 s timeout
    assert len(rx.requests) == 1


def test_an_error_status_counts_even_when_its_body_stalls(cli) -> None:
    with RawServer(lambda *_: STALLED % 410) as rx:
        r = dispatch(cli, rx.url(), 2, "delivery.retry_schedule=0s", "delivery.timeout=5")
    assert r.exit_code == 1
    ep = cli("show", "h", "--json").json()["endpoints"][0]
    assert ep["enabled"] is False and "410" in ep["disabled_reason"]  # gone, as a full 410
    assert len(rx.requests) == 1


@pytest.mark.parametrize("host", ["a..b", "x" * 70 + ".example"])
def test_a_host_name_that_cannot_be_looked_up_is_refused_at_subscribe(cli, host: str) -> None:
    r = cli("subscribe", "*", "--to", f"http://u:pw@{host}/x", "--name", "bad", expect=2)
    assert r.exit_code == 2
    assert "is not valid" in r.stderr and "pw" not in r.stderr.replace("********", "")
    assert cli("list", "--json").json() == []
