"""``csnotify demo``: the whole pipeline on this machine with nothing configured.

The simulator stands in for CloudStack; a webhook receiver that verifies signatures, an
SMTP sink, an SMS gateway stand-in and an endpoint that always fails stand in for the
subscribers. Subscriptions live in a temporary store; `listen` runs for a while; a live
table shows what happens; nothing is left behind (temporary files, and the queue and
exchange when RabbitMQ is used, are removed).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from csnotify import config
from csnotify.delivery.settings import DeliverySettings
from csnotify.listen import Listener, ListenOptions
from csnotify.models import Status
from csnotify.redact import mask_uri
from csnotify.signing import SignatureMismatch, verify
from csnotify.simulator.run import SimulatorOptions, simulate
from csnotify.sources.make import make_source
from csnotify.store import DeliveryRecord, Store
from csnotify.subscriptions import SubscriptionInput, subscribe

# Demo pacing: quick retries, and the failing endpoint switched off after a few seconds.
DEMO_SETTINGS = {
    "delivery.timeout": "2",
    "delivery.retry_schedule": "0s,0.2s",
    "failures.disable_after": "8",
}


@dataclass
class EndpointTally:
    subscription: str
    endpoint: str
    kind: str
    delivered: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    switched_off: bool = False

    @property
    def p50(self) -> float | None:
        return statistics.median(self.latencies[-500:]) if self.latencies else None


@dataclass
class Sinks:
    """What the stand-in subscribers received."""

    webhooks_verified: int = 0
    webhooks_invalid: int = 0
    emails: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    refused: int = 0


@dataclass
class DemoState:
    source: str = "api"
    note: str = ""
    started: float = field(default_factory=time.monotonic)
    duration: float = 20.0
    events: int = 0
    tallies: dict[str, EndpointTally] = field(default_factory=dict)
    sinks: Sinks = field(default_factory=Sinks)

    def record(self, record: DeliveryRecord) -> None:
        tally = self.tallies.get(record.subscription)
        if tally is None:
            return
        if record.status == Status.DELIVERED:
            tally.delivered += 1
            tally.latencies.append(record.latency_ms or 0.0)
        else:
            tally.failed += 1

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def as_json(self) -> dict[str, Any]:
        """The summary ``demo --json`` prints."""
        return {
            "source": self.source,
            "seconds": round(self.elapsed, 1),
            "events": self.events,
            "endpoints": [
                {
                    "subscription": t.subscription,
                    "endpoint": t.endpoint,
                    "kind": t.kind,
                    "delivered": t.delivered,
                    "failed": t.failed,
                    "p50_ms": round(t.p50, 1) if t.p50 is not None else None,
                    "switched_off": t.switched_off,
                }
                for t in self.tallies.values()
            ],
            "received": {
                "webhooks_with_valid_signature": self.sinks.webhooks_verified,
                "webhooks_with_invalid_signature": self.sinks.webhooks_invalid,
                "emails": len(self.sinks.emails),
                "sms": len(self.sinks.texts),
                "refused_by_failing_endpoint": self.sinks.refused,
            },
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_http(sinks: Sinks, key: str) -> tuple[Any, int]:
    """One aiohttp server for the webhook receiver, the SMS gateway and the failing endpoint."""
    from aiohttp import web

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(key, dict(request.headers), body)
        except SignatureMismatch:
            sinks.webhooks_invalid += 1
            return web.Response(status=401, text="bad signature")
        sinks.webhooks_verified += 1
        return web.Response(status=204)

    async def sms(request: web.Request) -> web.Response:
        doc = await request.json()
        sinks.texts.append(str(doc.get("params", {}).get("message", "")))
        return web.json_response({"result": {"message_id": len(sinks.texts), "status": "ok"}})

    async def failing(_request: web.Request) -> web.Response:
        sinks.refused += 1
        return web.Response(status=500, text="this endpoint always fails")

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/jsonrpc/sms", sms)
    app.router.add_post("/always-500", failing)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, int(port)


def start_smtp(sinks: Sinks) -> tuple[Any, int]:
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
            import email

            sinks.emails.append(str(email.message_from_bytes(envelope.content)["Subject"]))
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    return controller, port


async def amqp_usable(url: str) -> str | None:
    """None if RabbitMQ at ``url`` accepts a connection, else why not."""
    import aio_pika

    try:
        connection = await aio_pika.connect(url, timeout=3)
    except Exception as exc:  # noqa: BLE001 - the demo falls back to the API source
        return str(exc) or type(exc).__name__
    await connection.close()
    return None


async def prepare_bus(url: str, exchange: str, queue: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        q = await channel.declare_queue(queue, durable=True)
        await q.bind(ex, "#")


async def remove_bus(url: str, exchange: str, queue: str) -> None:
    import aio_pika

    with contextlib.suppress(Exception):
        connection = await aio_pika.connect(url, timeout=3)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(queue)
            await channel.exchange_delete(exchange)


def _subscribe_all(store: Store, demo: DemoState, http_port: int, smtp_port: int, key: str) -> None:
    base = f"http://127.0.0.1:{http_port}"
    mail = f"mailto://127.0.0.1:{smtp_port}?from=cloudstack@demo.invalid&to=oncall@demo.invalid"
    sms = f"smseagle://demotoken@127.0.0.1:{http_port}/+15550001111"
    for spec in (
        SubscriptionInput(["VM.*"], [f"{base}/hook"], "vm-webhook", key=key),
        SubscriptionInput(["*"], [mail], "errors-email", level="ERROR"),
        SubscriptionInput(["ALERT.*"], [sms], "alerts-sms"),
        # every phase of every event: enough failures to be switched off within a short run
        SubscriptionInput(["*"], [f"{base}/always-500"], "always-failing", categories=["*"]),
    ):
        subscribe(store, spec)
    for sub in store.subscriptions():
        for ep in sub.endpoints:
            demo.tallies[sub.name] = EndpointTally(sub.name, mask_uri(ep.uri), ep.kind)


async def _start_simulator(
    options: SimulatorOptions, stop: asyncio.Event
) -> tuple[asyncio.Task[int], dict[str, Any]]:
    ready: dict[str, Any] = {}
    started = asyncio.Event()

    def on_ready(info: dict[str, Any]) -> None:
        ready.update(info)
        started.set()

    task = asyncio.create_task(simulate(options, on_ready, lambda _n: None, stop))
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if task.done():
        task.result()  # raises what went wrong
    return task, ready


async def run_demo(
    duration: float,
    amqp: str | None,
    rate: float,
    show: Callable[[DemoState], None],
    zone: tzinfo,
) -> DemoState:
    """``zone``: the simulated server's (this host's, as a real server has)."""
    demo = DemoState(duration=duration)
    tag = secrets.token_hex(4)
    exchange, queue = f"csnotify-demo-{tag}", f"csnotify-demo-{tag}"
    if amqp:
        why = await amqp_usable(amqp)
        if why is None:
            demo.source = "amqp"
        else:
            demo.note = f"RabbitMQ at {mask_uri(amqp)} not usable ({why}); using the API source"
    bus = amqp if demo.source == "amqp" else None
    with tempfile.TemporaryDirectory(prefix="csnotify-demo-") as tmp:
        settings = config.load(Path(tmp) / "config.toml", {}, DEMO_SETTINGS)
        store = Store.open(Path(tmp) / "csnotify.db")
        key = _key()
        http_runner, http_port = await start_http(demo.sinks, key)
        smtp, smtp_port = start_smtp(demo.sinks)
        _subscribe_all(store, demo, http_port, smtp_port, key)
        if bus:
            await prepare_bus(bus, exchange, queue)
        stop_sim = asyncio.Event()
        # more alerts and failures than real life, and a seed whose first events include both,
        # so that every subscriber gets something early
        options = SimulatorOptions(listen="127.0.0.1:0", amqp=bus, exchange=exchange, rate=rate,
                                   alert_rate=0.3, failure_rate=0.25, seed=115,
                                   timezone=zone)  # fmt: skip
        sim_task, ready = await _start_simulator(options, stop_sim)
        listener = Listener(store, DeliverySettings.from_settings(settings), ListenOptions(),
                            lambda _line: None, on_outcome=demo.record)  # fmt: skip
        where = _source_settings(ready, bus, exchange, queue)
        source = make_source(
            demo.source,
            config.load(Path(tmp) / "config.toml", {}, {**DEMO_SETTINGS, **where}),
            interval=1.0,
            since=datetime.now(UTC) - timedelta(seconds=2),
        )
        demo.started = time.monotonic()
        shower = asyncio.create_task(_refresh(demo, listener, show))
        # Stopped as by SIGTERM when the time is up: a digest held back by the email
        # endpoint's rate limit would otherwise keep the demo waiting up to a minute.
        timer = asyncio.get_running_loop().call_later(duration, listener.stop.set)
        try:
            await listener.run(source)
        finally:
            timer.cancel()
            shower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shower
            _update(demo, listener)
            stop_sim.set()
            with contextlib.suppress(Exception):
                await sim_task
            client = getattr(source, "client", None)
            if client is not None:
                await client.close()
            await http_runner.cleanup()
            smtp.stop()
            store.close()
            if bus:
                await remove_bus(bus, exchange, queue)
    return demo


def _key() -> str:
    from csnotify.signing import generate_key

    return generate_key()


def _source_settings(
    ready: dict[str, Any], amqp: str | None, exchange: str, queue: str
) -> dict[str, str]:
    """Where the demo's listener reads: the simulator's API, or its bus when there is one."""
    found = {"cloudstack.url": ready["url"], "cloudstack.api_key": ready["api_key"],
             "cloudstack.secret_key": ready["secret_key"]}  # fmt: skip
    if amqp:
        found |= {"amqp.url": amqp, "amqp.exchange": exchange, "amqp.queue": queue,
                  "amqp.prefetch": "100"}  # fmt: skip
    return found


def _update(demo: DemoState, listener: Listener) -> None:
    demo.events = listener.events
    for target in listener.dispatcher.targets.values():
        tally = demo.tallies.get(target.subscription.name)
        if tally is not None:
            tally.switched_off = not target.enabled


async def _refresh(demo: DemoState, listener: Listener, show: Callable[[DemoState], None]) -> None:
    while True:
        _update(demo, listener)
        show(demo)
        await asyncio.sleep(0.5)
