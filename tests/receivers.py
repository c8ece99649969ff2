"""Real local receivers for the delivery tests: an HTTP server with scripted answers, an
SMTP sink (aiosmtpd) and an SMSEagle gateway stand-in. All on 127.0.0.1, random ports."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    close_midway: bool = False  # send headers and part of the body, then drop the connection
    drop: bool = False  # close the connection without answering
    trickle: float = 0.0  # seconds between body bytes


class _Server(ThreadingHTTPServer):
    # The standard library's listen backlog of 5 drops connections when a sender opens
    # many at once (csnotify sends up to delivery.per_endpoint in parallel); real web
    # servers accept hundreds.
    request_queue_size = 256


class Receiver:
    """An HTTP receiver whose answer to each request comes from ``script(request)``."""

    def __init__(self, script: Callable[[Request], Answer] | None = None) -> None:
        self.requests: list[Request] = []
        self.script = script or (lambda _req: Answer())
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # small writes would wait 40 ms for delayed ACKs

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                req = Request("POST", self.path, dict(self.headers.items()), body, time.time())
                with receiver.lock:
                    receiver.requests.append(req)
                answer = receiver.script(req)
                if answer.delay:
                    time.sleep(answer.delay)
                if answer.drop:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._answer(answer)

            def _answer(self, answer: Answer) -> None:
                self.send_response(answer.status)
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if answer.close_midway:
                    self.wfile.write(answer.body[: len(answer.body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if answer.trickle:
                    for i in range(len(answer.body)):
                        self.wfile.write(answer.body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(answer.trickle)
                    return
                self.wfile.write(answer.body)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *_args: None  # type: ignore[method-assign]  # clients that vanish are expected
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> list[Any]:
        return [r.json() for r in self.requests]


def closed_port() -> int:
    """A loopback port with nothing listening (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def self_signed(directory: Path, name: str = "localhost") -> ssl.SSLContext:
    """A server TLS context with a self-signed certificate for ``name``, made by openssl in
    ``directory`` (no client trusts it)."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", f"/CN={name}"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context


class SmtpSink:
    """A real SMTP server (aiosmtpd) keeping every message it receives. With ``tls_dir``,
    it requires STARTTLS with a self-signed certificate made there by openssl."""

    def __init__(self, tls_dir: Path | None = None) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Any] = []
        sink = self

        class Handler:
            async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
                self, server: Any, session: Any, envelope: Any
            ) -> str:
                import email

                msg = email.message_from_bytes(envelope.content)
                sink.messages.append((envelope.mail_from, envelope.rcpt_tos, msg))
                return "250 OK"

        self.port = closed_port()
        self.tls = tls_dir is not None
        extra: dict[str, Any] = {}
        if tls_dir is not None:
            extra = {"tls_context": self_signed(tls_dir), "require_starttls": True}
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **extra)

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    def uri(self, to: str = "oncall@example.com") -> str:
        if self.tls:  # self-signed: verify=no
            return (
                f"mailtos://127.0.0.1:{self.port}?from=cloudstack@example.com&to={to}"
                "&mode=starttls&verify=no"
            )
        return f"mailto://127.0.0.1:{self.port}?from=cloudstack@example.com&to={to}"


class SmsEagleGateway(Receiver):
    """Stands in for an SMSEagle device: its JSON-RPC ``sms.send_sms`` call."""

    def __init__(self) -> None:
        super().__init__(lambda _req: Answer(200, b'{"result": {"message_id": 1, "status": "ok"}}'))

    def uri(self, token: str = "tok123", to: str = "+15551230000") -> str:
        return f"smseagle://{token}@127.0.0.1:{self.server.server_address[1]}/{to}"

    def texts(self) -> list[str]:
        return [r.json()["params"]["message"] for r in self.requests if r.path == "/jsonrpc/sms"]
