"""Several listeners on one store (issue 15, point 8): bus drain with one and with two
`csnotify listen --source amqp` processes sharing one queue and one store, on SQLite (a
shared file), MariaDB (127.0.0.1:3306) and PostgreSQL (127.0.0.1:5432); and what claiming
a pending delivery costs on each, all in one run.

Usage: .venv/bin/python bench/listeners.py [--events 3000] [--claims 3000]

Measures:
- drain: the listeners start and attach to the queue, then M bus messages are published
  at once; from the first publish to the last receipt at a signed webhook (an aiohttp
  receiver in its own process). Rates, and two listeners against one on the same store.
  Goal: two listeners on a server database drain at >= 1.5x one listener.
- claim cost: N pending deliveries of one endpoint committed unclaimed, then claimed
  by ``Outbox.claim`` 100 at a time (as a worker refills its window) and, apart, one at a
  time; time per delivery, against SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import Bus
from results import write_section
from store import REPO, SERVERS  # the servers on this machine, as bench/store.py measures them

NAMES = {"sqlite": "SQLite (one file)", "mysql": "MariaDB", "postgresql": "PostgreSQL"}


class Database:
    """A fresh store for one measurement: a SQLite file, or a server database dropped after."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.name = f"csnotify_bench_{uuid.uuid4().hex[:10]}"
        self.url = (
            str(tmp / f"{self.name}.db") if kind == "sqlite" else f"{SERVERS[kind]}/{self.name}"
        )

    def __enter__(self) -> str:
        if self.kind != "sqlite":
            self._admin(f"CREATE DATABASE {self.name}")
        return self.url

    def __exit__(self, *exc: object) -> None:
        if self.kind != "sqlite":
            force = " WITH (FORCE)" if self.kind == "postgresql" else ""
            self._admin(f"DROP DATABASE {self.name}{force}")

    def _admin(self, sql: str) -> None:
        from csnotify.servers import connect, parse_url

        admin_db = "mysql" if self.kind == "mysql" else "postgres"
        conn = connect(parse_url(f"{SERVERS[self.kind]}/{admin_db}"))
        try:
            conn.execute(sql)
        finally:
            conn.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def consumers(bus: Bus) -> int:
    queue = await bus.channel.declare_queue(bus.queue, durable=True, passive=True)
    return int(queue.declaration_result.consumer_count)


async def drain(tmp: Path, kind: str, listeners: int, count: int, profile: str | None) -> float:
    """Messages a second, from the first publish to the last receipt."""
    with Database(kind, tmp) as url:
        bus = Bus(tmp, f"{kind}-{listeners}")
        bus.env["CSNOTIFY_DB"] = url
        await bus.connect()
        bus.subscribe(f"{bus.base}/drain", "drain")
        await bus.declare()
        procs = [bus.listen() for _ in range(listeners)]
        if profile:  # py-spy on the first listener
            spy = subprocess.Popen(  # noqa: ASYNC220 - started once, before timing
                [str(REPO / ".venv" / "bin" / "py-spy"), "record", "-r", "300", "-f", "raw",
                 "-o", profile, "--pid", str(procs[0].pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while await consumers(bus) < listeners and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            t0 = time.perf_counter()
            for i in range(count):
                await bus.publish(4_000_000 + i)
            got = await bus.wait("/drain", count, 300)
            rate = got / (time.perf_counter() - t0)
        finally:
            for proc in procs:
                stop(proc)
            if profile:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=30)
            await bus.close()
    assert got == count, (kind, listeners, got)
    return rate


def claim_cost(tmp: Path, kind: str, count: int, batch: int) -> float:
    """Microseconds per delivery claimed ``batch`` at a time."""
    from csnotify.delivery.outbox import Changes, Outbox, PendingRow
    from csnotify.events import from_normalised
    from csnotify.store import open_store

    with Database(kind, tmp) as url:
        store = open_store(url, {})
        try:
            outbox = Outbox(store, 100)
            rows = [
                PendingRow(1, from_normalised({"id": f"ev-{i}", "type": "VM.START"}), f"vm-{i}",
                           time.time(), claimed=False)
                for i in range(count)
            ]  # fmt: skip
            outbox.commit(Changes(new=rows))
            t0 = time.perf_counter()
            claimed = 0
            while got := outbox.claim(1, batch)[0]:
                claimed += len(got)
            elapsed = time.perf_counter() - t0
        finally:
            store.close()
    assert claimed == count, (kind, claimed)
    return elapsed / count * 1e6


async def main(events: int, claims: int, rounds: int, profile: str | None) -> str:
    kinds = ["sqlite", "mysql", "postgresql"]
    runs: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for r in range(rounds):  # one and two alternate, so that load from outside hits both
            for kind in kinds:
                for n in (1, 2):
                    spy = f"{profile}-{kind}-{n}.txt" if profile and kind != "sqlite" else None
                    rate = await drain(tmp, kind, n, events, spy if r == 0 else None)
                    runs.setdefault((kind, n), []).append(rate)
                    print(f"{kind}, {n} listener(s): {rate:,.0f}/s", file=sys.stderr)
        rates = {key: statistics.median(values) for key, values in runs.items()}
        cost = {
            (kind, batch): claim_cost(tmp, kind, claims if batch > 1 else claims // 5, batch)
            for kind in kinds
            for batch in (100, 1)
        }
    base = rates["sqlite", 1]
    lines = [
        "## Several listeners on one store (bench/listeners.py)",
        "",
        f"Command: `.venv/bin/python bench/listeners.py --events {events} --claims {claims}"
        f" --rounds {rounds}`; drain rates are medians of the rounds, one and two listeners"
        " alternating."
        " Real RabbitMQ, MariaDB and PostgreSQL on 127.0.0.1; `csnotify listen --source amqp`"
        " with the default settings, one or two processes on one queue and one store, into one"
        " signed webhook (an aiohttp receiver in its own process); the machine has"
        f" {os.cpu_count()} cores for all of them.",
        "",
        "| store | one listener | two listeners | two / one | one listener / SQLite's |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind in kinds:
        one, two = rates[kind, 1], rates[kind, 2]
        lines.append(
            f"| {NAMES[kind]} | {one:,.0f}/s | {two:,.0f}/s | {two / one:.2f}x | {one / base:.2f} |"
        )
    lines += [
        "",
        "Claim cost per delivery (`Outbox.claim`, one endpoint; a worker claims up to 512 at"
        " once, 256 at a time when refilling):",
        "",
        "| store | 100 at a time | one at a time | 100 at a time / SQLite's |",
        "|---|---:|---:|---:|",
    ]
    for kind in kinds:
        lines.append(
            f"| {NAMES[kind]} | {cost[kind, 100]:.0f} µs | {cost[kind, 1]:.0f} µs |"
            f" {cost[kind, 100] / cost['sqlite', 100]:.2f} |"
        )
    met = {kind: rates[kind, 2] / rates[kind, 1] >= 1.5 for kind in ("mysql", "postgresql")}
    lines += [
        "",
        "Goal (two listeners on a server database drain at >= 1.5x one): "
        + ", ".join(f"{NAMES[k]} {'yes' if ok else 'NO'}" for k, ok in met.items())
        + ".",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--claims", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", help="py-spy raw output prefix (first listener, servers)")
    args = parser.parse_args()
    body = asyncio.run(main(args.events, args.claims, args.rounds, args.profile))
    if not args.profile:
        write_section("listeners", body)
    print(body)
