"""End-to-end latency and throughput over CloudStack's event bus, and listen's memory.

Usage: .venv/bin/python bench/latency.py [--events 100000]

Everything runs on this machine against the real RabbitMQ on 127.0.0.1:5672, in three
processes: this script publishes CloudStack-format messages, `csnotify listen --source
amqp` delivers them, and bench/receiver.py (aiohttp) receives them at one signed webhook
and notes the wall-clock time each event arrived.

- latency: publish -> receipt at 100 events/s for 10 s (p50, p99), against a bare aio-pika
  consumer that only acknowledges, measured in the same run;
- throughput: 20,000 messages queued while listen is paused, then drained (events/s);
- memory: listen's resident set size at start, after 10,000 and after N events.
Targets (issue 4): p50 < 20 ms, p99 < 100 ms, >= 1,000 events/s, RSS < 80 MB at 100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_section

HERE = Path(__file__).resolve().parent
AMQP = os.environ.get("CSNOTIFY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
BODY = (
    '{{"eventDateTime":"2026-11-25 10:00:00 +0000","entityuuid":"{uuid}",'
    '"description":"starting Vm. Vm Id: {n}","event":"VM.START",'
    '"user":"5e4f3c10-8c3d-11ee-9a7b-0242ac120002","account":"5e4f1a2b-8c3d-11ee-9a7b-0242ac120002",'
    '"entity":"VirtualMachine","status":"Completed","VirtualMachine":"{uuid}"}}'
)


def message(n: int) -> tuple[str, bytes, str]:
    """Routing key, body, and the key the receiver notes its arrival by: the VM's id, one
    per message (a bus event's own id carries the listener run since issue 13)."""
    vm = str(uuid.UUID(int=n, version=4))
    key = f"management-server.ActionEvent.VM-START.VirtualMachine.{vm}"
    body = BODY.format(uuid=vm, n=n).encode()
    return key, body, vm


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def table_sizes(db: Path) -> dict[str, int]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # noqa: S608
                for t in ("deliveries", "seen_events", "cursors")}  # fmt: skip
    finally:
        conn.close()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url) as resp:
        return json.loads(resp.read())


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * p) - 1)] * 1000


class Bus:
    """A private exchange and queue, a receiver process, and a store for one measurement."""

    def __init__(self, tmp: Path, name: str) -> None:
        tag = uuid.uuid4().hex[:6]
        self.exchange, self.queue = f"bench-{tag}", f"bench-{tag}"
        self.db = tmp / f"{name}.db"
        self.env = {
            **os.environ,
            "CSNOTIFY_DB": str(self.db),
            "CSNOTIFY_CONFIG": str(tmp / f"{name}.toml"),
            "CSNOTIFY_AMQP_URL": AMQP,
            "CSNOTIFY_AMQP_EXCHANGE": self.exchange,
            "CSNOTIFY_AMQP_QUEUE": self.queue,
        }
        self.receiver = subprocess.Popen(
            [sys.executable, str(HERE / "receiver.py")], stdout=subprocess.PIPE, text=True
        )
        assert self.receiver.stdout is not None
        self.base = f"http://127.0.0.1:{int(self.receiver.stdout.readline())}"

    def subscribe(self, url: str, name: str, *extra: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "csnotify", "subscribe", "VM.*", "--key", "generate",
             "--to", url, "--name", name, *extra],
            env=self.env, check=True, capture_output=True,
        )  # fmt: skip

    def listen(self, *settings: str, prefix: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        """``csnotify listen --source amqp`` with these ``-c`` settings (after ``prefix``:
        a command that runs it)."""
        flags = [arg for kv in settings for arg in ("-c", kv)]
        return subprocess.Popen(
            [*prefix, sys.executable, "-m", "csnotify", *flags, "listen", "--source", "amqp"],
            env=self.env, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def count(self, path: str) -> int:
        return int(get_json(self.base + "/stats").get(path, 0))

    async def connect(self) -> None:
        import aio_pika

        self.conn = await aio_pika.connect(AMQP)
        self.channel = await self.conn.channel(publisher_confirms=False)
        self.ex = await self.channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )

    async def declare(self) -> None:
        queue = await self.channel.declare_queue(self.queue, durable=True)
        await queue.bind(self.ex, "#")

    async def publish(self, n: int) -> str:
        import aio_pika

        key, body, event_id = message(n)
        await self.ex.publish(
            aio_pika.Message(body, content_type="text/plain", delivery_mode=2), key
        )
        return event_id

    async def wait(self, path: str, count: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (got := self.count(path)) < count and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return got

    async def queued(self) -> int:
        queue = await self.channel.declare_queue(self.queue, durable=True, passive=True)
        return int(queue.declaration_result.message_count)

    async def close(self) -> None:
        channel = await self.conn.channel()
        await channel.queue_delete(self.queue)
        await channel.exchange_delete(self.exchange)
        await self.conn.close()
        self.receiver.terminate()


class Rig(Bus):
    """A bus with one signed webhook that notes arrival times (/timed/hook)."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, "bench")
        self.subscribe(f"{self.base}/timed/hook", "hook")

    def received(self) -> int:
        return self.count("/timed/hook")

    def arrivals(self) -> dict[str, float]:
        return get_json(self.base + "/times")

    async def wait_received(self, count: int, timeout: float) -> int:
        return await self.wait("/timed/hook", count, timeout)

    async def queue_ready(self) -> None:
        import aio_pika

        for _ in range(400):
            channel = await self.conn.channel()
            try:
                await channel.declare_queue(self.queue, durable=True, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                await asyncio.sleep(0.05)
                continue
            await channel.close()
            return


async def bare_consumer_latency(rate: float, seconds: float) -> list[float]:
    """The broker alone: publish -> a plain consumer's callback, acknowledging each."""
    import aio_pika

    conn = await aio_pika.connect(AMQP)
    channel = await conn.channel(publisher_confirms=False)
    tag = uuid.uuid4().hex[:6]
    ex = await channel.declare_exchange(
        f"bench-bare-{tag}", aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(f"bench-bare-{tag}", durable=True)
    await queue.bind(ex, "#")
    sent: dict[str, float] = {}
    lat: list[float] = []
    done = asyncio.Event()
    total = int(rate * seconds)

    async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        lat.append(time.time() - sent[msg.message_id or ""])
        await msg.ack()
        if len(lat) == total:
            done.set()

    consumer = await queue.consume(on_message)
    start = time.perf_counter()
    for i in range(total):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        sent[str(i)] = time.time()
        await ex.publish(aio_pika.Message(b"x", message_id=str(i)), "a.b.c.d.e")
    await asyncio.wait_for(done.wait(), 30)
    await queue.cancel(consumer)
    await queue.delete(if_unused=False, if_empty=False)
    await ex.delete()
    await conn.close()
    return lat


async def main(events: int) -> str:
    with tempfile.TemporaryDirectory() as tmp_dir:
        rig = Rig(Path(tmp_dir))
        await rig.connect()
        listen = rig.listen()
        try:
            await rig.queue_ready()
            await asyncio.sleep(1)
            rss_start = rss_mb(listen.pid)
            # latency at 100 events/s
            sent: dict[str, float] = {}
            rate, seconds = 100.0, 10.0
            start = time.perf_counter()
            for i in range(int(rate * seconds)):
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                event_id = await rig.publish(i)
                sent[event_id] = time.time()
            await rig.wait_received(len(sent), 30)
            arrived = rig.arrivals()
            latencies = [arrived[k] - t for k, t in sent.items() if k in arrived]
            # throughput: queue while listen is paused, then let it drain
            listen.send_signal(signal.SIGSTOP)
            before = rig.received()
            burst = 20_000
            for i in range(10_000, 10_000 + burst):
                await rig.publish(i)
            t0 = time.perf_counter()
            listen.send_signal(signal.SIGCONT)
            mid_count = await rig.wait_received(10_000, 60)
            rss_mid = rss_mb(listen.pid)  # at about 10,000 events
            got = await rig.wait_received(before + burst, 120)
            throughput = (got - before) / (time.perf_counter() - t0)
            # memory after N events in all
            i = 100_000
            while got < events:
                step = min(5000, events - got)
                for _ in range(step):
                    await rig.publish(i)
                    i += 1
                new = await rig.wait_received(got + step, 120)
                if new < got + step:
                    break
                got = new
            rss_end = rss_mb(listen.pid)
        finally:
            listen.send_signal(signal.SIGCONT)
            listen.send_signal(signal.SIGTERM)
            listen.wait(timeout=30)
            await rig.close()
        tables = table_sizes(Path(tmp_dir) / "bench.db")
    bare = await bare_consumer_latency(100.0, 5.0)
    p50, p99, b50, b99 = pct(latencies, 0.5), pct(latencies, 0.99), pct(bare, 0.5), pct(bare, 0.99)
    lines = [
        "## Event bus latency, throughput and memory (bench/latency.py)",
        "",
        f"Command: `.venv/bin/python bench/latency.py --events {events}`. Real RabbitMQ on"
        " 127.0.0.1; publisher, `csnotify listen --source amqp` and an aiohttp receiver (one"
        " signed webhook) in three processes. Targets: p50 < 20 ms, p99 < 100 ms,"
        " >= 1,000 events/s, RSS < 80 MB after 100,000 events.",
        "",
        "| measure | csnotify | baseline: bare aio-pika consumer | ratio |",
        "|---|---:|---:|---:|",
        f"| publish -> receipt p50 at 100/s | {p50:.1f} ms | {b50:.1f} ms | {p50 / b50:.1f}x |",
        f"| publish -> receipt p99 at 100/s | {p99:.1f} ms | {b99:.1f} ms | {p99 / b99:.1f}x |",
        f"| drain {burst:,} queued events into one webhook | {throughput:,.0f} events/s | | |",
        "",
        f"listen's RSS: {rss_start:.1f} MB at start, {rss_mid:.1f} MB after {mid_count:,} events,"
        f" {rss_end:.1f} MB after {got:,} events ({rss_end / rss_start:.2f}x the start).",
        f"Store tables after {got:,} events: delivery log {tables['deliveries']:,} rows (bound:"
        f" log.max_per_endpoint x endpoints = 100), seen event ids {tables['seen_events']:,} rows"
        " (bound: 100,000).",
        "",
        "Targets met: "
        + ", ".join(
            f"{name} {'yes' if ok else 'NO'}"
            for name, ok in (
                ("p50 < 20 ms", p50 < 20),
                ("p99 < 100 ms", p99 < 100),
                (">= 1,000/s", throughput >= 1000),
                (f"RSS < 80 MB at {got:,}", rss_end < 80),
            )
        )
        + ".",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    body = asyncio.run(main(args.events))
    write_section("latency", body)
    print(body)
