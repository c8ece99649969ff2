"""``csnotify simulate``: serve the API, generate (or replay) events at a rate, and publish
them to RabbitMQ exactly as CloudStack's event bus does."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from csnotify.errors import BadInput, Unreachable
from csnotify.events import list_response_items, loads
from csnotify.simulator.generator import Generated, Generator
from csnotify.simulator.server import Api, Behaviour, EventLog


@dataclass
class SimulatorOptions:
    listen: str = "127.0.0.1:8080"
    amqp: str | None = None
    exchange: str = "cloudstack-events"
    rate: float = 10.0
    count: int | None = None
    replay: Path | None = None
    api_key: str | None = None
    secret_key: str | None = None
    seed: int | None = None
    record: Path | None = None
    alert_rate: float = 0.02  # chance of an alert before each operation
    failure_rate: float = 0.05  # chance that an operation fails (ERROR level)
    timezone: tzinfo = UTC  # the JVM's zone (the CLI gives this host's, as a real server has)
    max_page_size: int = 500  # CloudStack's default.page.size
    start: datetime | None = None  # the server's clock starts here and runs in real time

    def host_port(self) -> tuple[str, int]:
        from csnotify.config import parse_listen

        return parse_listen(self.listen, "127.0.0.1:8080", default_host="127.0.0.1")


class BusPublisher:
    """Publishes as RabbitMQEventBus does: topic exchange declared durable, the description
    JSON as a persistent text/plain body, no headers."""

    def __init__(self, url: str, exchange: str) -> None:
        self.url = url
        self.exchange_name = exchange
        self.connection: Any = None
        self.exchange: Any = None

    async def start(self) -> None:
        import aio_pika

        try:
            self.connection = await aio_pika.connect(self.url, timeout=10)
        except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as exc:
            raise Unreachable(f"cannot connect to RabbitMQ for --amqp: {exc}") from None
        channel = await self.connection.channel()
        self.exchange = await channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )

    async def publish(self, item: Generated) -> None:
        import aio_pika

        message = aio_pika.Message(
            item.body_text.encode(),
            content_type="text/plain",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self.exchange.publish(message, routing_key=item.routing_key)

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()


def replayed(path: Path) -> Iterator[Generated]:
    """Events of a file: captured bus messages ({"routing_key", "body"}), listEvents items
    or listeventsresponse documents, one JSON document per line or a whole document."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot read --replay file {path}: {exc.strerror}") from None
    stripped = text.strip()
    try:
        docs = (
            [json.loads(stripped)]
            if stripped.startswith(("[", "{")) and "\n{" not in stripped
            else None
        )
    except json.JSONDecodeError:
        docs = None
    if docs is None:
        docs = [loads(line) for line in text.splitlines() if line.strip()]
    if len(docs) == 1 and isinstance(docs[0], list):
        docs = docs[0]
    seq = 0
    for doc in docs:
        if not isinstance(doc, dict):
            raise BadInput(f"--replay file {path}: each entry must be a JSON object")
        if "listeventsresponse" in doc:
            rows = list(reversed(list_response_items(doc)))
        elif "routing_key" in doc:
            body = (
                doc.get("body")
                if isinstance(doc.get("body"), dict)
                else loads(doc.get("body_raw", "{}"))
            )
            seq += 1
            row = doc.get("list_item") if isinstance(doc.get("list_item"), dict) else None
            text = doc["body_raw"] if isinstance(doc.get("body_raw"), str) else None
            yield Generated(
                doc["routing_key"].split(".")[1], doc["routing_key"], body, row, seq, text
            )
            continue
        else:
            rows = [doc]
        for row in rows:
            seq += 1
            yield Generated("ActionEvent", "", {}, row, seq)


def _stream(options: SimulatorOptions, zone: tzinfo) -> Iterator[Generated]:
    if options.replay:
        return replayed(options.replay)
    generator = Generator(
        options.seed, failure_rate=options.failure_rate, alert_rate=options.alert_rate, zone=zone
    )
    start = options.start
    if start is None:
        return generator.events()
    began = time.monotonic()

    def shifted() -> datetime:
        """--start: a server whose clock shows another time (a DST change, say)."""
        return start + timedelta(seconds=time.monotonic() - began)

    return generator.events(shifted)


async def _emit(item: Generated, api: Api, publisher: BusPublisher | None, record: Any) -> None:
    if item.list_item is not None:
        api.log.add(item.list_item)
        api.directory.learn(item.list_item)
    if publisher is not None and item.routing_key:
        await publisher.publish(item)
    if record is not None:
        line = {"routing_key": item.routing_key, "body_raw": item.body_text}
        record.write(json.dumps({**line, "list_item": item.list_item}) + "\n")
        record.flush()


async def simulate(
    options: SimulatorOptions,
    on_ready: Callable[[dict[str, Any]], None],
    on_done: Callable[[int], None],
    stop: asyncio.Event,
) -> int:
    """Run until ``stop`` is set; returns how many events were generated."""
    from aiohttp import web

    zone = options.timezone
    api = Api(
        options.api_key or secrets.token_urlsafe(32),
        options.secret_key or secrets.token_urlsafe(32),
        EventLog(),
        Behaviour(zone=zone, max_page_size=options.max_page_size),
    )
    host, port = options.host_port()
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise BadInput(f"cannot listen on {options.listen}: {exc.strerror}") from None
    bound = site._server.sockets[0].getsockname()[1] if site._server else port
    publisher = BusPublisher(options.amqp, options.exchange) if options.amqp else None
    record = options.record.open("a", encoding="utf-8") if options.record else None
    made = 0
    try:
        if publisher is not None:
            await publisher.start()
        on_ready(
            {
                "url": f"http://{host}:{bound}/client/api",
                "api_key": api.api_key,
                "secret_key": api.secret_key,
                "amqp": bool(publisher),
                "exchange": options.exchange,
                "timezone": str(zone),
                "max_page_size": options.max_page_size,
            }
        )
        stream = _stream(options, zone)
        started = time.monotonic()
        for item in stream:
            if stop.is_set() or (options.count is not None and made >= options.count):
                break
            if options.rate > 0:
                delay = started + made / options.rate - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                        break
                    except TimeoutError:
                        pass
            elif made % 200 == 0:
                await asyncio.sleep(0)  # --rate 0: still answer requests meanwhile
            await _emit(item, api, publisher, record)
            made += 1
        on_done(made)
        await stop.wait()
    finally:
        if record is not None:
            record.close()
        if publisher is not None:
            await publisher.close()
        await runner.cleanup()
    return made
