"""A lean HTTP/1.1 client for webhook POSTs: kept-alive connections per origin, requests
written as bytes, responses parsed by httptools (llhttp, Node.js's parser, in C).

A webhook delivery is one small POST and a short answer; a general client (aiohttp, httpx)
spends most of its time per request on machinery this does not need (request and
response objects, header multidicts, tracing, cookie jars). Measured in
bench/throughput.py, this client costs about a third of aiohttp's per request, and the
HTTP request was most of what one delivery cost.

What it does: http and https (the system's CA store, hostname checked), Basic auth from
the URI's user info, keep-alive with one silent retry when a reused connection turns out
closed before any answer (the usual keep-alive race; a receiver may see that delivery
twice, which the webhook-id lets it notice), responses with Content-Length, chunked or
ended by the connection's close. What it does not do: redirects, proxies, compression,
cookies. At most ``cap`` bytes of a response body are kept; a longer one ends the
connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from csnotify.channels import host_problem
from csnotify.redact import mask_uri

HEAD_CAP = 64 * 1024  # bytes of status line and headers before the answer is refused
URL_CACHE = 4096


class HTTPFailure(Exception):
    """The request did not get a complete answer; ``str()`` says why, in words."""


class ConnectFailure(HTTPFailure):
    pass


class CutShort(HTTPFailure):
    """The answer did not end: the connection closed in its middle (``status`` and
    ``headers`` when they were read)."""

    def __init__(
        self, message: str, status: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class BodyTimeout(CutShort):
    """The status and headers came, the end of the body did not in time."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; the last of a repeated header
    body: bytes  # at most the client's cap


@dataclass(frozen=True)
class Target:
    """What a URL comes to for a request."""

    origin: tuple[str, str, int]  # scheme, host, port: connections are shared per origin
    head: bytes  # request line, Host and Authorization, for a POST


@dataclass
class _Answer:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    head_size: int = 0
    ended_by_close: bool = False  # no Content-Length, not chunked: the close ends it
    got_bytes: bool = False


class _Connection(asyncio.Protocol):
    def __init__(self, cap: int) -> None:
        import httptools

        self._httptools = httptools
        self.cap = cap
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.answer = _Answer()
        self._done: asyncio.Future[None] | None = None
        self._head_done: asyncio.Future[None] | None = None
        self._parser: Any = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._parser is None:  # an answer nobody asked for: this connection is bad
            self.close()
            return
        self.answer.got_bytes = True
        try:
            self._parser.feed_data(data)
        except self._httptools.HttpParserUpgrade:
            self._fail(HTTPFailure("the receiver switched protocols"))
        except self._httptools.HttpParserError as exc:
            self._fail(HTTPFailure(f"the answer is not HTTP: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._done is None or self._done.done():
            return
        answer = self.answer
        if answer.status is not None and answer.ended_by_close:
            self._finish()
            return
        if answer.status is None and answer.got_bytes:
            failure: HTTPFailure = CutShort(
                "the connection was closed in the middle of the answer's headers"
            )
        elif answer.status is None:
            failure = CutShort("the receiver closed the connection without answering")
        else:
            failure = CutShort(
                "the connection was closed in the middle of the response",
                answer.status,
                answer.headers,
            )
        self._fail(failure)

    # -- httptools callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.answer.head_size += len(name) + len(value)
        if self.answer.head_size > HEAD_CAP:
            self._fail(HTTPFailure(f"the answer's headers are longer than {HEAD_CAP} bytes"))
            return
        if len(self.answer.headers) < 100:
            self.answer.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        answer, parser = self.answer, self._parser
        if parser is None:  # more than was asked for: dropped with the connection
            return
        answer.status = parser.get_status_code()
        if 100 <= answer.status < 200:  # informational (100 Continue): the answer follows
            return
        headers = answer.headers
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        answer.ended_by_close = "content-length" not in headers and not chunked
        if self._head_done is not None and not self._head_done.done():
            self._head_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._parser is None:
            return
        answer = self.answer
        room = self.cap - answer.size
        if room > 0:
            answer.chunks.append(body[:room])
        answer.size += len(body)
        if answer.size > self.cap:  # enough: keep the start, drop the connection
            self._finish()
            self.close()

    def on_message_complete(self) -> None:
        if self._parser is None:
            return
        if self.answer.status is not None and 100 <= self.answer.status < 200:
            self.answer = _Answer(got_bytes=True)
            return
        keep = self._parser.should_keep_alive()
        self._finish()
        if not keep:
            self.close()

    # -- requests -----------------------------------------------------------------------

    def send(self, data: bytes) -> tuple[asyncio.Future[None], asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        self.answer = _Answer()
        self._parser = self._httptools.HttpResponseParser(self)
        self._head_done = loop.create_future()
        self._done = loop.create_future()
        if self.transport is None or self.closed:
            self._fail(CutShort("the connection closed before the request went out"))
        else:
            self.transport.write(data)
        return self._head_done, self._done

    def idle(self) -> bool:
        return (
            not self.closed
            and self._parser is None
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _finish(self) -> None:
        for future in (self._head_done, self._done):
            if future is not None and not future.done():
                future.set_result(None)
        self._parser = None

    def expire(self, body_timeout: float | None) -> None:
        """The request's time is up: the whole of it (TimeoutError), or, with
        ``body_timeout``, the wait for the end of the body after the headers came."""
        if body_timeout is None:
            self._fail(TimeoutError())
        else:
            answer = self.answer
            message = f"the answer's body did not end within {body_timeout:g} s"
            self._fail(BodyTimeout(message, answer.status, answer.headers))

    def _fail(self, failure: Exception) -> None:
        for future in (self._head_done, self._done):
            if future is not None and not future.done():
                future.set_exception(failure)
                future.exception()  # retrieved: the caller may wait on the other one only
        self._parser = None
        self.close()


# scheme, host, port, and the address connections go to ("": where the host resolves)
Origin = tuple[str, str, int, str]


class Client:
    """POSTs, at most ``limit`` at once; at most ``limit`` idle connections are kept for
    reuse (across origins), the others closed."""

    def __init__(self, limit: int, cap: int) -> None:
        self.cap = cap
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self._idle_count = 0
        self._idle: dict[Origin, list[_Connection]] = {}
        self._targets: dict[str, Target] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        timeout: float,
        body_timeout: float,
        address: str | None = None,
    ) -> Response:
        """Raises TimeoutError when ``timeout`` passes first; BodyTimeout when the end of
        the body does not come within ``body_timeout`` of the headers; HTTPFailure when
        no complete answer came (CutShort carries the status when it was read). With
        ``address``, the connection goes there (TLS still checks the URL's host name), and
        only connections made to it are reused for it."""
        target = self._target(url)
        origin: Origin = (*target.origin, address or "")
        text = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        if text.count("\n") != len(headers) or text.count("\r") != len(headers):
            raise HTTPFailure("a header name or value holds a line break (not sent)")
        data = b"".join((target.head, f"Content-Length: {len(body)}\r\n{text}\r\n".encode(), body))
        loop = asyncio.get_running_loop()
        async with self._slots:
            deadline = loop.time() + timeout
            for again in (True, False):
                conn = await self._connection(origin, reuse=again, deadline=deadline)
                head_done, done = conn.send(data)
                # Timers end the wait (cheaper per request than two asyncio.timeout scopes)
                timer = loop.call_at(deadline, conn.expire, None)
                try:
                    await head_done
                    if loop.time() + body_timeout < deadline:  # the body's wait ends first
                        timer.cancel()
                        timer = loop.call_at(loop.time() + body_timeout, conn.expire, body_timeout)
                    await done
                except CutShort:
                    conn.close()
                    if again and conn.reused and not conn.answer.got_bytes:  # not BodyTimeout
                        continue  # closed while it waited for reuse: once more, on a new one
                    raise
                except BaseException:
                    conn.close()
                    raise
                finally:
                    timer.cancel()
                answer = conn.answer
                self._release(origin, conn)
                return Response(answer.status or 0, answer.headers, b"".join(answer.chunks))
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        for connections in self._idle.values():
            for conn in connections:
                conn.close()
        self._idle.clear()
        self._idle_count = 0
        await asyncio.sleep(0)  # let the transports close

    # -- connections --------------------------------------------------------------------

    async def _connection(self, origin: Origin, reuse: bool, deadline: float) -> _Connection:
        idle = self._idle.get(origin) if reuse else None
        while idle:
            conn = idle.pop()
            self._idle_count -= 1
            if conn.idle():
                conn.reused = True
                return conn
            conn.close()
        scheme, host, port, pinned = origin
        tls = self._tls_context() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                _transport, conn = await loop.create_connection(
                    lambda: _Connection(self.cap),
                    pinned or host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None and pinned else None,
                )
        except ssl.SSLCertVerificationError as exc:
            raise ConnectFailure(f"TLS certificate error: {exc.verify_message or exc}") from None
        except ssl.SSLError as exc:
            raise ConnectFailure(f"TLS error: {exc.reason or exc}") from None
        except OSError as exc:
            raise ConnectFailure(f"cannot connect: {exc.strerror or exc}") from None
        return conn

    def _release(self, origin: Origin, conn: _Connection) -> None:
        if conn.idle() and self._idle_count < self.limit:
            self._idle.setdefault(origin, []).append(conn)
            self._idle_count += 1
        else:
            conn.close()

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= URL_CACHE:
                self._targets.clear()
            target = self._targets[url] = make_target(url)
        return target


def make_target(url: str) -> Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise HTTPFailure(f"not an http(s) URL with a host: {mask_uri(url)}")
    default = 443 if scheme == "https" else 80
    try:
        port = parts.port or default
    except ValueError:
        raise HTTPFailure(f"the port in {mask_uri(url)} is not a number from 1 to 65535") from None
    host = parts.hostname
    if (problem := host_problem(host)) is not None:
        raise HTTPFailure(f"cannot connect: {problem}")
    shown = f"[{host}]" if ":" in host else host
    if port != default:
        shown = f"{shown}:{port}"
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    lines = [f"POST {path} HTTP/1.1", f"Host: {_idna(shown)}"]
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        lines.append("Authorization: Basic " + base64.b64encode(pair.encode()).decode())
    head = "".join(f"{line}\r\n" for line in lines).encode()
    return Target((scheme, host, port), head)


def _idna(host: str) -> str:
    with contextlib.suppress(UnicodeError):
        host.encode("ascii")
        return host
    return host.encode("idna").decode("ascii")
