"""The delivery outbox on the path operators run: `csnotify listen --source amqp` with the
default settings, the real RabbitMQ, an aiohttp receiver in its own process.

Usage: .venv/bin/python bench/outbox.py [--events 2000] [--drain 10000] [--backlog 150000]

Measures (issue 11, point 7), each against a baseline measured in the same run:
- isolation on the bus: N events at 200/s to a healthy webhook beside one that never
  answers; publish -> receipt p99 of the healthy one, against the same run without the
  dead endpoint. Target: every event arrives, p99 < 50 ms (bar 250 ms).
- draining M queued bus messages into one signed webhook, against a bare consumer (aio-pika
  with the same prefetch, POSTing each body with aiohttp and acknowledging it after the
  answer). Target: >= 60% of the bare consumer (bar 40%).
- memory with a large backlog: K deliveries pending for a dead endpoint (connection
  refused, never switched off): listen's RSS as the backlog grows, and the store's size.
  Target: RSS < 80 MB and flat. What a listener remembers per bus message (content ids for
  twins, ids given on the connection) is bounded at REMEMBERED (100,000) messages, so RSS
  grows until then and must not grow after: flat means the last point is within 5% of the
  first point past that bound. The backlog itself stops at delivery.max_backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import Bus, get_json, pct, rss_mb
from results import write_section

from csnotify.sources.amqp import REMEMBERED

PREFETCH = 100


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGCONT)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


# -- isolation ---------------------------------------------------------------------------


async def isolation(tmp: Path, events: int, with_dead: bool) -> tuple[int, float]:
    """(healthy endpoint's receipts, its p99 publish -> receipt in ms)."""
    bus = Bus(tmp, f"iso-{with_dead}")
    await bus.connect()
    bus.subscribe(f"{bus.base}/timed/ok", "ok")
    if with_dead:
        bus.subscribe(f"{bus.base}/hang/dead", "dead")
    await bus.declare()
    listen = bus.listen()
    try:
        await asyncio.sleep(1.5)
        sent: dict[str, float] = {}
        rate = 200.0
        start = time.perf_counter()
        for i in range(events):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            sent[await bus.publish(i)] = time.time()
        got = await bus.wait("/timed/ok", events, 60)
        arrived = get_json(bus.base + "/times")
        latencies = [arrived[k] - t for k, t in sent.items() if k in arrived]
    finally:
        stop(listen)
        await bus.close()
    return got, pct(latencies, 0.99)


# -- drain -------------------------------------------------------------------------------


async def drain_csnotify(tmp: Path, count: int) -> float:
    bus = Bus(tmp, "drain")
    await bus.connect()
    bus.subscribe(f"{bus.base}/drain", "drain")
    await bus.declare()
    for i in range(count):
        await bus.publish(1_000_000 + i)
    listen = bus.listen()
    try:
        t0 = time.perf_counter()
        got = await bus.wait("/drain", count, 300)
        rate = got / (time.perf_counter() - t0)
    finally:
        stop(listen)
        await bus.close()
    assert got == count, got
    return rate


async def drain_bare(tmp: Path, count: int) -> float:
    """aio-pika + aiohttp, nothing else: POST each body, acknowledge after the answer."""
    import aio_pika
    import aiohttp

    bus = Bus(tmp, "bare")
    await bus.connect()
    await bus.declare()
    for i in range(count):
        await bus.publish(2_000_000 + i)
    url = f"{bus.base}/bare"
    done = asyncio.Event()
    seen = 0
    async with aiohttp.ClientSession() as session:
        channel = await bus.conn.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(bus.queue, durable=True, passive=True)

        async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen
            async with session.post(url, data=msg.body) as resp:
                await resp.read()
            await msg.ack()
            seen += 1
            if seen == count:
                done.set()

        t0 = time.perf_counter()
        await queue.consume(on_message)
        await asyncio.wait_for(done.wait(), 300)
        rate = count / (time.perf_counter() - t0)
    await bus.close()
    return rate


# -- a large backlog ---------------------------------------------------------------------


async def backlog(tmp: Path, count: int) -> tuple[list[tuple[int, int, float]], float, float]:
    """[(published, pending, RSS MB)], the RSS at start, and the store's size in MB at the
    end. Pending stops at delivery.max_backlog (100,000 by default): past it the oldest are
    given up."""
    bus = Bus(tmp, "backlog")
    await bus.connect()
    closed = "http://127.0.0.1:9/dead"  # connection refused: fails at once, retried later
    bus.subscribe(closed, "dead")
    await bus.declare()
    listen = bus.listen("failures.disable_after=0")
    points: list[tuple[int, int, float]] = []
    try:
        await asyncio.sleep(1.5)
        start = rss_mb(listen.pid)
        step = count // 6
        for k in range(6):
            for i in range(step):
                await bus.publish(3_000_000 + k * step + i)
            while await bus.queued() > 0:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            await asyncio.sleep(1)
            with sqlite3.connect(bus.db) as conn:
                pending = int(conn.execute("SELECT count(*) FROM pending").fetchone()[0])
            points.append(((k + 1) * step, pending, rss_mb(listen.pid)))
    finally:
        stop(listen)
        await bus.close()
    return points, start, store_mb(tmp)


def store_mb(tmp: Path) -> float:
    return sum(p.stat().st_size for p in tmp.glob("backlog.db*")) / 2**20


async def main(events: int, drain: int, pending: int) -> str:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        got_alone, p99_alone = await isolation(tmp, events, with_dead=False)
        got_dead, p99_dead = await isolation(tmp, events, with_dead=True)
        ours = await drain_csnotify(tmp, drain)
        bare = await drain_bare(tmp, drain)
        points, rss_start, size = await backlog(tmp, pending)
    rss_end = points[-1][2]
    past = [r for n, _, r in points if n > REMEMBERED]
    flat = rss_end / past[0] if past else float("nan")
    lines = [
        "## Outbox on the bus (bench/outbox.py)",
        "",
        f"Command: `.venv/bin/python bench/outbox.py --events {events} --drain {drain}"
        f" --backlog {pending}`. Real RabbitMQ on 127.0.0.1; `csnotify listen --source amqp`"
        " with the default settings (delivery.timeout 10 s, delivery.per_endpoint 16,"
        f" amqp.prefetch {PREFETCH}) and an aiohttp receiver, each in its own process.",
        "",
        "| measure | csnotify | baseline (same run) | ratio |",
        "|---|---:|---:|---:|",
        f"| healthy endpoint beside one that never answers: events received of {events:,}"
        f" at 200/s | {got_dead:,} | {got_alone:,} (alone) | {got_dead / max(got_alone, 1):.2f} |",
        f"| ... its publish -> receipt p99 | {p99_dead:.1f} ms | {p99_alone:.1f} ms (alone) |"
        f" {p99_dead / p99_alone:.2f}x |",
        f"| drain {drain:,} queued bus messages into one signed webhook | {ours:,.0f}/s |"
        f" {bare:,.0f}/s (bare aio-pika + aiohttp consumer) | {ours / bare:.2f} |",
        "",
        f"A dead endpoint's backlog (connection refused, failures.disable_after=0): listen's RSS"
        f" {rss_start:.1f} MB at start; "
        + ", ".join(f"{rss:.1f} MB after {n:,} messages ({p:,} pending)" for n, p, rss in points)
        + f" (last / first past {REMEMBERED:,} messages: {flat:.2f}x). Store with"
        f" {points[-1][1]:,} pending:"
        f" {size:.0f} MB.",
        "",
        "Targets met: "
        + ", ".join(
            f"{name} {'yes' if ok else 'NO'}"
            for name, ok in (
                ("every event to the healthy endpoint", got_dead == events),
                ("p99 < 50 ms", p99_dead < 50),
                (">= 60% of the bare consumer", ours >= 0.6 * bare),
                ("RSS < 80 MB", rss_end < 80),
                ("flat past the bound (within 5%)", flat <= 1.05),
            )
        )
        + ".",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--drain", type=int, default=10_000)
    parser.add_argument("--backlog", type=int, default=150_000)
    args = parser.parse_args()
    body = asyncio.run(main(args.events, args.drain, args.backlog))
    write_section("outbox", body)
    print(body)
