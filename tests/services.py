"""Real services for the source tests: RabbitMQ on 127.0.0.1:5672 (a test that needs it
fails with its name when it is not running: never skipped) and `csnotify simulate` as a
subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

AMQP_URL = os.environ.get("CSNOTIFY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def rabbitmq_running() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            return True
    except OSError:
        return False


def require_rabbitmq() -> None:
    if not rabbitmq_running():
        pytest.fail(
            "RabbitMQ is not running on 127.0.0.1:5672; the bus tests need it"
            " (start it: rabbitmq-server -detached)",
            pytrace=False,
        )


@dataclass
class Bus:
    """A private exchange and queue name for one test, removed afterwards."""

    url: str
    exchange: str
    queue: str

    def env(self) -> dict[str, str]:
        return {"CSNOTIFY_AMQP_URL": self.url, "CSNOTIFY_AMQP_EXCHANGE": self.exchange,
                "CSNOTIFY_AMQP_QUEUE": self.queue}  # fmt: skip

    def queued(self) -> int:
        async def count() -> int:
            import aio_pika

            conn = await aio_pika.connect(self.url)
            async with conn:
                channel = await conn.channel()
                queue = await channel.declare_queue(self.queue, durable=True, passive=True)
                return int(queue.declaration_result.message_count)

        return asyncio.run(count())

    def publish(self, routing_key: str, body: bytes) -> None:
        async def send() -> None:
            import aio_pika

            conn = await aio_pika.connect(self.url)
            async with conn:
                channel = await conn.channel()
                exchange = await channel.declare_exchange(
                    self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
                )
                await exchange.publish(
                    aio_pika.Message(body, content_type="text/plain", delivery_mode=2), routing_key
                )

        asyncio.run(send())

    def publish_many(self, messages: list[tuple[str, bytes]], rate: float = 0.0) -> list[float]:
        """Publish over one connection, ``rate`` a second (0: as fast as possible);
        returns when each was published (unix time)."""

        async def send() -> list[float]:
            import aio_pika

            times = []
            conn = await aio_pika.connect(self.url)
            async with conn:
                channel = await conn.channel()
                exchange = await channel.declare_exchange(
                    self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
                )
                start = time.monotonic()
                for i, (key, body) in enumerate(messages):
                    if rate:
                        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                    times.append(time.time())
                    await exchange.publish(
                        aio_pika.Message(body, content_type="text/plain", delivery_mode=2), key
                    )
            return times

        return asyncio.run(send())

    def cleanup(self) -> None:
        async def remove() -> None:
            import aio_pika

            conn = await aio_pika.connect(self.url)
            async with conn:
                channel = await conn.channel()
                await channel.queue_delete(self.queue)
                await channel.exchange_delete(self.exchange)

        with contextlib.suppress(Exception):  # best effort
            asyncio.run(remove())


@pytest.fixture
def bus() -> Iterator[Bus]:
    require_rabbitmq()
    tag = uuid.uuid4().hex[:8]
    b = Bus(AMQP_URL, f"test-events-{tag}", f"test-csnotify-{tag}")
    yield b
    b.cleanup()


@dataclass
class Simulator:
    proc: subprocess.Popen[str]
    info: dict[str, Any]
    record: Path

    @property
    def url(self) -> str:
        return self.info["url"]

    def wait_generated(self, timeout: float = 60) -> int:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        return int(json.loads(line)["generated"])

    def stats(self) -> dict[str, Any]:
        base = self.url.rsplit("/client/api", 1)[0]
        with urllib.request.urlopen(base + "/simulator/stats") as resp:
            return json.loads(resp.read())

    def recorded(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@contextmanager
def simulator(tmp_path: Path, *args: str, api_key: str = "test-api-key",
              secret_key: str = "test-secret-key") -> Iterator[Simulator]:  # fmt: skip
    record = tmp_path / f"sim-{uuid.uuid4().hex[:6]}.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "csnotify", "simulate", "--listen", "127.0.0.1:0", "--json",
         "--api-key", api_key, "--secret-key", secret_key, "--record", str(record), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        raise AssertionError(
            f"simulator did not start: {proc.stderr.read() if proc.stderr else ''}"
        )
    sim = Simulator(proc, json.loads(line), record)
    try:
        yield sim
    finally:
        sim.stop()


def wait_for(predicate: Any, timeout: float = 30, every: float = 0.05) -> bool:
    """True once ``predicate()`` is, asking every ``every`` seconds until ``timeout``.

    A question that takes a while (a CLI process, a broker connection, parsing every
    request received so far) is asked again only after as long as it took: polling then
    takes at most half a core instead of all of one, which the processes under test
    (and the other xdist workers) need."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        asked = time.monotonic()
        if predicate():
            return True
        time.sleep(max(every, time.monotonic() - asked))
    return bool(predicate())


class TcpProxy:
    """A loopback TCP proxy the test controls: ``cut()`` drops every connection and refuses
    new ones until ``restore()``, like a broker or network outage, without touching the
    shared RabbitMQ."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open = False
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for a, b in pairs:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()
