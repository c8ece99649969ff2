"""The aiohttp application behind ``csnotify serve``.

Every route calls the core function its CLI command calls (csnotify/subscriptions.py,
status.py, dispatch.py, reach.py); a ``CsnotifyError`` becomes an RFC 9457
``application/problem+json`` answer whose ``detail`` is the line the CLI prints:

  400  the body is not the JSON the operation takes (malformed, unknown field, wrong type)
       or cannot be decoded (a Content-Encoding it does not have)
  401  no valid credentials              403  the caller may not have it (policy)
  404  no such subscription in scope     409  the name is taken
  413  the body is over api.max_body_bytes
  422  a value the core refuses (the CLI's exit status 2)
  429  over api.rate_limit               503  the store is busy or unreachable

The store has one connection: each call on it runs in a worker thread, one at a time
(``aio.locked_thread``), so the event loop keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from csnotify import __version__
from csnotify.api import bodies, operations
from csnotify.errors import BadInput, CsnotifyError, NameTaken, NotFound, Unreachable
from csnotify.logs import NOTICE
from csnotify.policy import PolicyRefused
from csnotify.redact import mask_text
from csnotify.store import StoreBusy
from csnotify.tokens import Caller, authenticate

if TYPE_CHECKING:
    from csnotify.config import Settings
    from csnotify.store import Store

log = logging.getLogger("csnotify.api")

PROBLEM = "application/problem+json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiProblem(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def status_of(exc: CsnotifyError) -> int:
    if isinstance(exc, bodies.Malformed):
        return 400
    if isinstance(exc, PolicyRefused):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, NameTaken):
        return 409
    if isinstance(exc, BadInput):
        return 422
    if isinstance(exc, Unreachable | StoreBusy):
        return 503
    return 500


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    from http import HTTPStatus

    doc = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": mask_text(detail),
    }
    return web.json_response(doc, status=status, content_type=PROBLEM, headers=headers)


@dataclass
class Counts:
    """Requests answered since start, by status class (``status`` shows them)."""

    started: float = field(default_factory=time.time)
    by_status: dict[str, int] = field(default_factory=dict)

    def add(self, status: int) -> None:
        key = f"{status // 100}xx"
        self.by_status[key] = self.by_status.get(key, 0) + 1


REFUSED = "refused credentials from this address"


def signed_params(request: web.Request) -> bool:
    from csnotify.api import signed

    return signed.credentials(request.query, request.headers) is not None


class RateLimit:
    """Requests per minute per caller: a token bucket each, refilled continuously."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.buckets: dict[str, tuple[float, float]] = {}

    def wait(self, who: str, now: float) -> float:
        """0 when the request may go; else the seconds until it could."""
        if not self.per_minute:
            return 0.0
        rate = self.per_minute / 60.0
        tokens, at = self.buckets.get(who, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * rate)
        if tokens < 1:
            self.buckets[who] = (tokens, now)
            return (1 - tokens) / rate
        self.buckets[who] = (tokens - 1, now)
        return 0.0

    def exhausted(self, who: str, now: float, pending: int = 0) -> float:
        """Like ``wait``, without taking a request from the budget; ``pending``: requests
        of ``who`` that may yet take one (counted as if they had)."""
        if not self.per_minute:
            return 0.0
        tokens, at = self.buckets.get(who, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * self.per_minute / 60.0)
        tokens -= pending
        return 0.0 if tokens >= 1 else (1 - tokens) * 60.0 / self.per_minute


class Api(operations.Service):
    def __init__(self, store: Store, settings: Settings) -> None:
        super().__init__(store, settings)
        self.counts = Counts()
        self.limit = RateLimit(settings["api.rate_limit"])
        self.failures = RateLimit(settings["api.rate_limit"])  # refused credentials, by address
        # signed requests whose check is under way, by address: each may yet be refused,
        # so a burst that comes at once is held back as one that came in turn would be
        self.checking: dict[str, int] = {}
        self.cs_auth: Any = None  # CloudStack-signed requests: set by serve() with admin keys

    # -- the pieces every request goes through -------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        from csnotify.api import commands

        started = time.monotonic()
        caller: Caller | None = None
        cloudstack = request.path == commands.PATH
        try:
            if request.path != "/v1/openapi.json":
                # failed authentications count against the address they come from, so
                # that guessing (and the look-ups a signed request costs) stays bounded
                # (only failures: a valid caller behind the same proxy is never held up by
                # another's wrong token; a signed request, whose check may cost look-ups
                # in CloudStack, is held back before it while its address is over)
                address = f"address:{request.remote}"
                held = cloudstack or signed_params(request)
                # a check under way counts as a refusal until it is known, so that what
                # comes at once is held back as what came in turn (a bearer token costs
                # no look-up: it is not counted)
                bearer = request.headers.get("Authorization", "").lower().startswith("bearer ")
                checked = held and not bearer
                pending = self.checking.get(address, 0) if checked else 0
                if held:
                    self.throttle(
                        self.failures.exhausted(address, time.monotonic(), pending), REFUSED
                    )
                if checked:
                    self.checking[address] = pending + 1
                try:
                    caller = await self.caller(request)
                except ApiProblem:
                    self.throttle(self.failures.wait(address, time.monotonic()), REFUSED)
                    raise
                finally:
                    if checked:
                        self._checked(address)
                self.throttle(self.limit.wait(caller.via, time.monotonic()))
                request["caller"] = caller
            response = await handler(request)
        except Exception as exc:  # noqa: BLE001 - every failure is answered, none escapes
            status, detail, headers = self.failure(request, exc)
            if cloudstack:
                # the parameters read, or the query's when the body could not be read
                params = request.get("params", request.query)
                response = commands.error(params, status, detail, headers)
            else:
                response = problem(status, detail, headers)
        self.counts.add(response.status)
        log.log(
            NOTICE,  # an access log: shown by default, silenced by -q
            "%s %s%s %s %.1f ms caller=%s",
            request.method,
            request.path,  # the query is left out: a signed request carries its signature there
            f" {commands.named(request.get('params', request.query))}" if cloudstack else "",
            response.status,
            (time.monotonic() - started) * 1000,
            caller.via if caller else "-",
        )
        return response

    def _checked(self, address: str) -> None:
        left = self.checking.pop(address) - 1
        if left:
            self.checking[address] = left

    def failure(self, request: web.Request, exc: Exception) -> tuple[int, str, dict[str, str]]:
        """A failed request's status, the one line that says why, and headers to send."""
        from csnotify.api.commands import UNSUPPORTED, UnknownCommand

        if isinstance(exc, ApiProblem):
            return exc.status, exc.detail, exc.headers
        if isinstance(exc, UnknownCommand):
            return UNSUPPORTED, exc.message, {}
        if isinstance(exc, NameTaken):  # one namespace for all: the CLI's hint is no use here
            return 409, "that name is taken; choose another 'name'", {}
        if isinstance(exc, CsnotifyError):
            return status_of(exc), exc.message, {}
        if isinstance(exc, web.HTTPRequestEntityTooLarge):
            return (
                413,
                f"the request body is larger than {self.settings['api.max_body_bytes']} bytes"
                " (api.max_body_bytes)",
                {},
            )
        if isinstance(exc, web.HTTPException):  # aiohttp's own: unknown path, wrong method
            detail = {
                404: f"no such resource {request.path}; see /v1/openapi.json",
                405: f"{request.method} is not allowed on {request.path}; see /v1/openapi.json",
            }.get(exc.status, exc.reason)
            return exc.status, detail, {k: v for k, v in exc.headers.items() if k == "Allow"}
        if isinstance(exc, ConnectionResetError):  # the caller went before its body ended
            return 400, "the connection closed before the request body ended", {}
        if isinstance(exc, web.RequestPayloadError):  # e.g. Content-Encoding: gzip, not gzip
            return 400, "the request body cannot be decoded as its Content-Encoding says", {}
        log.exception("internal error on %s %s", request.method, request.path, exc_info=exc)
        return 500, f"internal error: {type(exc).__name__}", {}

    def throttle(self, wait: float, what: str = "requests") -> None:
        if wait:
            raise ApiProblem(
                429,
                f"more than {self.limit.per_minute} {what} a minute (api.rate_limit); slow down",
                {"Retry-After": str(max(1, round(wait)))},
            )

    async def caller(self, request: web.Request) -> Caller:
        """Who the request acts for: a bearer token's owner, or the CloudStack user whose
        keys signed it. At /client/api every parameter is signed, ``command`` among
        them; under /v1 the signature also covers the method, path and body."""
        from csnotify.api import commands, signed
        from csnotify.clock import now_iso

        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if request.path == commands.PATH:
            params = request["params"] = await commands.request_params(request)
            cs_params = params if signed.credentials(params, {}) is not None else None
        else:
            cs_params = signed.credentials(request.query, request.headers)
        if scheme.lower() == "bearer" and credentials:
            found = await self.run(authenticate, self.store, credentials, now_iso())
            if found is not None:
                return found
            detail = "the bearer token is unknown, revoked or expired; ask for a new one"
        elif cs_params is not None and self.cs_auth is None:
            detail = (
                "CloudStack-signed requests need the admin keys on the server"
                " (cloudstack.api_key, cloudstack.secret_key); use a bearer token"
            )
        elif cs_params is not None:
            if request.path == commands.PATH:
                covered = cs_params
            else:
                covered = signed.signed_params(
                    cs_params, request.method, request.path, await request.read()
                )
            try:
                return await self.cs_auth.caller(cs_params, covered)  # type: ignore[no-any-return]
            except signed.Unauthorized as exc:
                detail = exc.message
        else:
            detail = (
                "no credentials; send 'Authorization: Bearer TOKEN' (csnotify token create)"
                " or sign the request with your CloudStack API keys"
            )
        raise ApiProblem(401, detail, {"WWW-Authenticate": 'Bearer realm="csnotify"'})

    # -- routes: each calls its operation (operations.py), as /client/api does -------

    async def openapi(self, request: web.Request) -> web.Response:
        from csnotify.api.openapi import document

        return web.json_response(document(__version__))

    async def list_subscriptions(self, request: web.Request) -> web.Response:
        return web.json_response(await operations.list_subscriptions(self, request["caller"]))

    async def create(self, request: web.Request) -> web.Response:
        doc = bodies.parse_json(await request.read())
        data = await operations.create(self, request["caller"], doc)
        location = f"/v1/subscriptions/{data['name']}"
        return web.json_response(data, status=201, headers={"Location": location})

    async def show(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return web.json_response(await operations.show(self, request["caller"], name))

    async def update(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        doc = bodies.parse_json(await request.read())
        return web.json_response(await operations.update(self, request["caller"], name, doc))

    async def delete(self, request: web.Request) -> web.Response:
        await operations.delete(self, request["caller"], request.match_info["name"])
        return web.Response(status=204)

    async def switch(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        enabled = request.path.endswith("/enable")
        return web.json_response(
            await operations.set_enabled(self, request["caller"], name, enabled)
        )

    async def test(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return web.json_response(await operations.test(self, request["caller"], name))

    async def deliveries(self, request: web.Request) -> web.Response:
        query = request.query
        rows = await operations.deliveries(
            self,
            request["caller"],
            query.get("subscription"),
            operations.flag(query.get("failed"), "query parameter 'failed'"),
            operations.whole(query.get("limit"), "query parameter 'limit'", 50),
        )
        return web.json_response(rows)

    async def event_types(self, request: web.Request) -> web.Response:
        return web.json_response(operations.event_types(request.query.get("match")))

    async def match(self, request: web.Request) -> web.Response:
        query = request.query
        found = await operations.match(
            self, request["caller"], query.get("type"), query.get("level"),
            query.getall("where", []),
        )  # fmt: skip
        return web.json_response(found)

    async def whoami(self, request: web.Request) -> web.Response:
        return web.json_response(request["caller"].as_json())

    async def cloudstack(self, request: web.Request) -> web.Response:
        from csnotify.api import commands

        return await commands.handle(self, request)


def application(store: Store, settings: Settings) -> tuple[web.Application, Api]:
    api = Api(store, settings)
    app = web.Application(
        middlewares=[api.middleware], client_max_size=settings["api.max_body_bytes"]
    )
    app.add_routes(
        [
            web.get("/v1/openapi.json", api.openapi),
            web.get("/v1/whoami", api.whoami),
            web.get("/v1/subscriptions", api.list_subscriptions),
            web.post("/v1/subscriptions", api.create),
            web.get("/v1/subscriptions/{name}", api.show),
            web.patch("/v1/subscriptions/{name}", api.update),
            web.delete("/v1/subscriptions/{name}", api.delete),
            web.post("/v1/subscriptions/{name}/test", api.test),
            web.post("/v1/subscriptions/{name}/enable", api.switch),
            web.post("/v1/subscriptions/{name}/disable", api.switch),
            web.get("/v1/deliveries", api.deliveries),
            web.get("/v1/event-types", api.event_types),
            web.get("/v1/match", api.match),
            web.get("/client/api", api.cloudstack),
            web.post("/client/api", api.cloudstack),
        ]
    )
    return app, api


async def serve(
    store: Store,
    settings: Settings,
    host: str,
    port: int,
    ready: Callable[[str], None],
    stop: asyncio.Event,
    ssl_context: Any = None,
    shutdown_timeout: float = 10.0,
    option: str = "--listen",
) -> Api:
    """Serve until ``stop`` is set (SIGTERM), then stop taking connections, let requests
    in flight finish (up to ``shutdown_timeout``) and return. ``option`` names the
    address in errors (serve --listen, listen --api)."""
    app, api = application(store, settings)
    client = _admin_client(settings)
    if client is not None:
        from csnotify.api.signed import CloudStackAuth

        api.cs_auth = CloudStackAuth(client, settings["api.auth_cache_ttl"])
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            raise BadInput(
                f"{option} {host}:{port}: cannot listen there ({exc.strerror or exc})"
            ) from None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound_host, bound_port = sockets[0].getsockname()[:2] if sockets else (host, port)
        scheme = "https" if ssl_context is not None else "http"
        shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        url = f"{scheme}://{shown}:{bound_port}"
        ready(url)
        beating = asyncio.ensure_future(_heartbeat(api, url, stop))
        await stop.wait()
        await beating
    finally:
        await runner.cleanup()
        if client is not None:
            await client.close()
    return api


HEARTBEAT_S = 10.0


async def _heartbeat(api: Api, url: str, stop: asyncio.Event) -> None:
    """What ``csnotify status`` shows about this server: its address and request counts,
    saved at start, every HEARTBEAT_S and when it stops (status tells a stale one)."""
    import os
    import socket

    from csnotify.clock import now_iso
    from csnotify.processes import PIDNS
    from csnotify.store import SourceState

    state = SourceState(api.store)
    doc: dict[str, Any] = {"url": url, "pid": os.getpid(), "host": socket.gethostname(),
                           "pidns": PIDNS, "started": now_iso(),
                           "heartbeat_s": HEARTBEAT_S}  # fmt: skip
    while True:
        doc |= {"running": not stop.is_set(), "requests": dict(api.counts.by_status)}
        try:
            await api.run(state.save_cursor, f"serve:{url}", doc)
        except CsnotifyError as exc:  # a busy store: the next beat tries again
            log.warning("cannot save the API's state for 'status': %s", exc.message)
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HEARTBEAT_S)


def _admin_client(settings: Settings) -> Any:
    """A client with the admin keys, when they are set: CloudStack-signed requests find
    their user with it. Without them only bearer tokens are taken."""
    if not (settings["cloudstack.api_key"] and settings["cloudstack.secret_key"]):
        return None
    from csnotify.cloudstack import CloudStackClient, Credentials

    return CloudStackClient(Credentials.from_settings(settings), timeout=10.0)
