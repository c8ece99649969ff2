"""CloudStack's RabbitMQ event bus.

A durable queue (shared by every listener: competing consumers) bound to CloudStack's
topic exchange with keys derived from the subscriptions. Each message is acknowledged
once its deliveries are written to the store (with its event id): at-least-once. The
acknowledgements go out batched (``Acks``). Messages that are not CloudStack events are
logged and acknowledged, never redelivered forever. When the broker goes away, the
listener reconnects with backoff.

Bus messages carry no id (RabbitMQEventBus sets no message id), and CloudStack does
publish byte-identical twins: the pre- and post-transition messages of volume, snapshot
and network state machines, per-NIC usage events of one VM in one second, job updates
without a date. So an event's id is its content id (routing key and body) with its
occurrence: the n-th identical message this listener takes fresh off the queue, and which
listener (a run's random tag, so twins taken by two listeners differ too).

A message is acknowledged only after the store marks it so (``Listener.acknowledge``: the
mark is committed first), so a message the store does not show acknowledged surely was
not. RabbitMQ redelivers exactly the unacknowledged messages, and a listener accepts and
acknowledges in arrival order, so a message the broker marks *redelivered* is taken for
the oldest accepted, unmarked message of the same content not yet matched; it is skipped
(and marked). With none, it is new. What can still collide is in the README.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from csnotify.errors import BadInput, CsnotifyError, Unreachable
from csnotify.events import BUS_ID_NAMESPACE, parse_bus_body
from csnotify.redact import mask_uri
from csnotify.sources import Outage

if TYPE_CHECKING:
    from csnotify.listen import Listener
    from csnotify.models import Subscription

log = logging.getLogger("csnotify")
MAX_MESSAGE_BYTES = 1024 * 1024
# Replies to a declare that no retry changes: the settings name something the broker
# refuses (the default exchange, a reserved amq. name, a queue or exchange of another kind)
REFUSALS = ("ACCESS_REFUSED", "PRECONDITION_FAILED", "NOT_ALLOWED")
MAX_KEY = 255
REMEMBERED = 100_000  # content ids counted, ids given and matched, per listener run


class Occurrences:
    """Ids for bus messages: content id, occurrence and listener run (see above)."""

    def __init__(self, run: str | None = None) -> None:
        self.run = run or uuid.uuid4().hex
        # Both keyed by hash() of the id (an int: a third of the memory of the text, and
        # they hold up to REMEMBERED each). A collision (about 1 in 10^9 at that size)
        # costs nothing: ids stay unique, since the content id itself goes into each.
        self.counts: dict[int, int] = {}  # content id -> fresh copies taken
        self.matched: set[str] = set()  # accepted ids a redelivery was taken for
        # ids given on the current connection: the broker redelivers none of them on it
        self.session: dict[int, None] = {}

    def new_session(self) -> None:
        self.session.clear()

    def fresh(self, digest: str) -> str:
        key = hash(digest)
        n = self.counts.get(key, 0)
        self.counts[key] = n + 1
        for held in (self.counts, self.session):
            if len(held) > REMEMBERED:
                for old in list(held)[: REMEMBERED // 2]:
                    del held[old]
        event_id = str(uuid.uuid5(BUS_ID_NAMESPACE, f"{digest}\n{self.run}\n{n}"))
        self.session[hash(event_id)] = None
        return event_id

    def redelivery_of(self, accepted: list[str]) -> str | None:
        """The accepted message a redelivered one repeats: the oldest of the same content
        not marked acknowledged (``accepted``) that no redelivery was taken for yet."""
        for event_id in accepted:
            if event_id not in self.matched and hash(event_id) not in self.session:
                self.matched.add(event_id)
                if len(self.matched) > REMEMBERED:
                    self.matched.clear()
                return event_id
        return None


def binding_keys(subscriptions: list[Subscription]) -> set[str]:
    """Routing-key bindings for the enabled subscriptions' patterns.

    The event type is one word of the routing key (dots replaced by dashes), so only exact
    types can be bound narrowly (``*.*.VM-START.*.*``); any wildcard pattern, or no
    subscription at all, needs ``#``. Types are bound as written and upper-cased, since
    bindings are case-sensitive and CloudStack's types are mostly upper case."""
    keys: set[str] = set()
    for sub in subscriptions:
        if not sub.enabled:
            continue
        for pattern in sub.patterns:
            if "*" in pattern or "?" in pattern:
                return {"#"}
            for form in {pattern, pattern.upper()}:
                keys.add(f"*.*.{form.replace('.', '-')}.*.*")
    return keys or {"#"}


class AmqpSource:
    name = "amqp"

    def __init__(
        self,
        url: str,
        exchange: str,
        queue: str,
        prefetch: int,
        once: bool = False,
        max_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.url = url
        self.max_bytes = max_bytes
        self.exchange_name = exchange
        self.queue_name = queue
        self.prefetch = prefetch
        self.once = once
        self.outage = Outage(f"RabbitMQ at {mask_uri(url)}")
        self.wanted: set[str] = {"#"}
        self.bound: set[str] = set()
        self._queue: Any = None
        self._exchange: Any = None
        self._acks = Acks()
        self.received = 0
        self.ids = Occurrences()

    async def subscriptions_changed(self, subscriptions: list[Subscription]) -> None:
        self.wanted = binding_keys(subscriptions)
        if self._queue is not None:
            await self._bind()

    async def _bind(self) -> None:
        """Add bindings that are wanted and missing; never remove (other listeners on the
        queue may need them, and an event no subscription wants is simply acknowledged)."""
        for key in sorted(self.wanted - self.bound):
            await self._queue.bind(self._exchange, routing_key=key)
            self.bound.add(key)
            log.info("bound queue %s to %s with %s", self.queue_name, self.exchange_name, key)

    async def run(self, listener: Listener) -> None:
        import aio_pika

        while not listener.stop.is_set():
            try:
                connection = await aio_pika.connect(self.url, timeout=10)
            except Exception as exc:  # noqa: BLE001 - aiormq raises many kinds; all mean "not now"
                reason = _connect_reason(exc, self.url)
                if self.once or "ACCESS_REFUSED" in reason or "virtual host" in reason:
                    raise Unreachable(
                        f"cannot connect to RabbitMQ at {mask_uri(self.url)}: {reason}"
                    ) from None
                if await listener.sleep(self.outage.failed(reason)):
                    return
                continue
            self.outage.ok()
            try:
                await self._session(listener, connection)
            except CsnotifyError:
                raise
            except Exception as exc:  # noqa: BLE001 - a lost connection shows as many kinds
                if listener.stop.is_set():
                    return
                if await listener.sleep(self.outage.failed(_reason(exc))):
                    return
            finally:
                self._queue = None
                self.bound.clear()
                with contextlib.suppress(Exception):
                    await connection.close()
            if self.once:
                return

    async def _session(self, listener: Listener, connection: Any) -> None:
        import aio_pika

        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_args: lost.set())
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        try:
            self._exchange = await channel.declare_exchange(
                self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            self._queue = await channel.declare_queue(self.queue_name, durable=True)
            self._acks = Acks()  # delivery tags are the channel's
            self.bound.clear()
            self.ids.new_session()
            await self._bind()
        except Exception as exc:
            reason = _reason(exc)
            if any(code in reason for code in REFUSALS):  # settings, not an outage
                raise BadInput(
                    f"RabbitMQ refused exchange {self.exchange_name!r} or queue"
                    f" {self.queue_name!r} ({reason}); check amqp.exchange and amqp.queue"
                ) from None
            raise
        if self.once:
            await self._drain(listener)
            return
        tag = await self._queue.consume(lambda m: self._on_message(listener, m))
        stop = asyncio.create_task(listener.stop.wait())
        gone = asyncio.create_task(lost.wait())
        await asyncio.wait({stop, gone}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        gone.cancel()
        if lost.is_set() and not listener.stop.is_set():
            raise ConnectionError("connection to the broker lost")
        with contextlib.suppress(Exception):
            await self._queue.cancel(tag)
        await listener.finish()
        await self._settle()

    async def _drain(self, listener: Listener) -> None:
        """--once: everything queued now, then stop."""
        while not listener.stop.is_set():
            message = await self._queue.get(no_ack=False, fail=False)
            if message is None:
                break
            await self._on_message(listener, message)
        await listener.finish()
        await self._settle()

    async def _settle(self) -> None:
        await self._acks.settle()

    async def _on_message(self, listener: Listener, message: Any) -> None:
        self.received += 1
        done, failed = self._acks.expect(message)  # before any await: tags arrive in order
        try:
            await self._accept(listener, message, done)
        except BaseException:
            failed()  # returned to the queue, so that it holds back no other acknowledgement
            raise

    async def _accept(self, listener: Listener, message: Any, done: Callable[[], None]) -> None:
        key = message.routing_key or ""
        if len(message.body) > self.max_bytes:  # CloudStack's events are a few KB
            listener.reject(
                f"message {key[:MAX_KEY]!r}",
                f"{len(message.body)} bytes, more than amqp.max_message_bytes ({self.max_bytes})",
            )
            done()
            return
        try:
            event = parse_bus_body(message.body, key)
        except BadInput as exc:
            listener.reject(f"message {key[:MAX_KEY]!r}", exc.message)
            done()
            return
        digest = event.digest or event.id
        if message.redelivered:
            accepted = await listener.db(listener.state.accepted, digest)
            earlier = self.ids.redelivery_of(accepted)
            if earlier is not None:
                log.info("skipping redelivered event %s %s (already handled)", event.type, earlier)
                listener.acknowledge(earlier, done)
                return
        event.id = self.ids.fresh(digest)
        await listener.handle(event, lambda: listener.acknowledge(event.id, done), remember=True)


SETTLED, FAILED = "settled", "failed"


class Acks:
    """Acknowledgements of one channel, sent as few frames as possible.

    Messages are settled in the order they arrived (the pipeline commits them in that
    order); when some are settled, one ``basic.ack`` with ``multiple`` covers the longest
    run of settled messages from the oldest unacknowledged one. A message not settled yet
    holds back only the acknowledgements of the ones after it, never their delivery; one
    whose handling failed is returned to the queue (``basic.nack``, requeue) so that it
    holds back nothing. Nothing is acknowledged before it is settled, and the frames go
    out in the order they were decided."""

    def __init__(self) -> None:
        self._waiting: collections.deque[list[Any]] = collections.deque()  # [message, state]
        self._scheduled = False
        self._sending: asyncio.Task[None] | None = None

    def expect(self, message: Any) -> tuple[Callable[[], None], Callable[[], None]]:
        """Note an arriving message; returns (settled, failed), to call once it is safe in
        the store, or when handling it failed."""
        entry: list[Any] = [message, None]

        def mark(state: str) -> Callable[[], None]:
            def call() -> None:
                if entry[1] is None:
                    entry[1] = state
                    self._schedule()

            return call

        self._waiting.append(entry)
        return mark(SETTLED), mark(FAILED)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        steps: list[tuple[Any, str]] = []
        last = None
        while self._waiting and self._waiting[0][1] is not None:
            message, state = self._waiting.popleft()
            if state == SETTLED:
                last = message
                continue
            if last is not None:
                steps.append((last, SETTLED))
                last = None
            steps.append((message, FAILED))
        if last is not None:
            steps.append((last, SETTLED))
        if steps:
            self._sending = asyncio.ensure_future(_send(self._sending, steps))

    async def settle(self) -> None:
        """Wait for the acknowledgements already decided."""
        if self._scheduled:
            self._flush()
        if self._sending is not None:
            await asyncio.gather(self._sending, return_exceptions=True)


async def _send(before: asyncio.Task[None] | None, steps: list[tuple[Any, str]]) -> None:
    if before is not None:
        await asyncio.gather(before, return_exceptions=True)
    try:
        for message, state in steps:
            if state == SETTLED:
                await message.ack(multiple=True)
            else:
                await message.nack(requeue=True)
    except Exception as exc:  # noqa: BLE001 - the channel is gone; the broker redelivers
        log.info("could not acknowledge message (%s); the broker will redeliver it", _reason(exc))


def _connect_reason(exc: BaseException, url: str) -> str:
    """aiormq reports a refused virtual host as an unexpected frame (the broker closes the
    connection instead of opening it); say what it means."""
    reason = _reason(exc)
    if "Connection.OpenOk" in reason and "Connection.Close" in reason:
        from urllib.parse import unquote, urlsplit

        vhost = unquote(urlsplit(url).path[1:]) or "/"
        user = urlsplit(url).username or "guest"
        return (
            f"the broker refused virtual host {vhost!r} to user {user!r} (it does not exist,"
            " or the user has no permission on it: see 'rabbitmqctl list_vhosts' and"
            " 'rabbitmqctl list_user_permissions'); fix the path of amqp.url"
        )
    return reason


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:300]
