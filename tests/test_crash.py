"""Crash: `listen` killed with SIGKILL at random points while 10,000 events flow; after a
restart every event reaches the receiver at least once, and the duplicates are bounded by
what was in flight at each kill. Counts are printed for RELIABILITY.md (pytest -s)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from receivers import Receiver
from services import bus, simulator, wait_for  # noqa: F401 - fixtures

from csnotify.delivery.settings import DeliverySettings
from csnotify.events import parse_bus_body

EVENTS = 10_000
KILLS = 3
# Attempts running plus ended ones whose outcome is not committed yet, for one endpoint:
# each at most delivery.per_endpoint (see delivery/workers.py).
IN_FLIGHT = 2 * DeliverySettings().per_endpoint
PREFETCH = 100


def start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "csnotify", "listen", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def kill_and_restart(
    rx: Receiver,
    env: dict[str, str],
    args: tuple[str, ...],
    total: int,
    first: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """Start listen (the first time with ``first`` added), SIGKILL it at random points and
    start it again each time."""
    rng = random.Random(42)
    proc = start(env, *args, *first)
    for k in range(KILLS):
        target = total * (k + 1) // (KILLS + 2) + rng.randrange(total // 20)
        assert wait_for(lambda target=target: len(rx.requests) >= target, 120), (
            f"stalled before kill {k + 1}"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc = start(env, *args)
    return proc


def by_id(event: dict) -> str:
    return event["id"]


def by_content(event: dict) -> str:
    """A bus event by what it is (its id carries the occurrence and the listener run):
    byte-identical twins are two expected events with one content."""
    return f"{event['state']}|{json.dumps(event['raw'], sort_keys=True)}"


def finish(
    rx: Receiver,
    proc: subprocess.Popen[bytes],
    name: str,
    expected: list[str],
    key: Callable[[dict], str] = by_id,
) -> int:
    """Let the last listen deliver everything, stop it, and count; returns the duplicates."""
    want = Counter(expected)

    def complete() -> bool:
        have = Counter(key(b["event"]) for b in set_of_events(rx))
        return all(have[k] >= n for k, n in want.items())

    try:
        assert wait_for(complete, 180)
        time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return report(name, [key(b["event"]) for b in set_of_events(rx)], expected,
                  len(rx.requests))  # fmt: skip


def set_of_events(rx: Receiver) -> list[dict]:
    """Each event id once (a repeat of an id is a duplicate delivery, counted apart)."""
    return list({b["event"]["id"]: b for b in rx.bodies()}.values())


def report(name: str, got: list[str], expected: list[str], deliveries: int) -> int:
    counts, want = Counter(got), Counter(expected)
    missing = sum(max(0, n - counts[k]) for k, n in want.items())
    duplicates = deliveries - len(expected)
    print(
        f"\n{name}: {len(expected)} events, {deliveries} deliveries, {missing} missing, {duplicates} duplicates"
    )
    assert not missing, f"{missing} events lost"
    return duplicates


def test_amqp_sigkill_loses_nothing(tmp_path: Path, bus) -> None:  # noqa: F811
    with Receiver() as rx:
        subprocess.run(
            [sys.executable, "-m", "csnotify", "subscribe", "*", "--category", "*", "--to", rx.url],
            check=True,
            capture_output=True,
        )
        env = {**os.environ, **bus.env(), "CSNOTIFY_AMQP_PREFETCH": str(PREFETCH)}
        first = start(env, "--source", "amqp", "--once")
        first.wait(timeout=30)  # declares and binds the queue
        with simulator(
            tmp_path,
            "--amqp",
            bus.url,
            "--exchange",
            bus.exchange,
            "--count",
            str(EVENTS),
            "--rate",
            "0",
        ) as sim:
            sim.wait_generated()
            expected = [
                by_content(parse_bus_body(r["body_raw"].encode(), r["routing_key"]).as_json())
                for r in sim.recorded()
            ]
        proc = kill_and_restart(rx, env, ("--source", "amqp"), len(expected))
        duplicates = finish(rx, proc, "amqp", expected, by_content)
    # only what was in flight at each kill comes again
    # Besides the deliveries in flight, a kill repeats the messages the store marked
    # acknowledged whose acknowledgement the broker had not processed: redelivered, they
    # cannot be told from a twin CloudStack published (issue 13), so they go out again.
    # At most amqp.prefetch of them are unacknowledged at any moment.
    assert duplicates <= KILLS * (IN_FLIGHT + PREFETCH)


def test_api_sigkill_loses_nothing(tmp_path: Path) -> None:
    with Receiver() as rx, simulator(tmp_path, "--count", str(EVENTS), "--rate", "2000/s") as sim:
        sim.wait_generated()
        expected = [r["list_item"]["id"] for r in sim.recorded() if r["list_item"]]
        subprocess.run(
            [sys.executable, "-m", "csnotify", "subscribe", "*", "--category", "*", "--to", rx.url],
            check=True,
            capture_output=True,
        )
        env = {**os.environ, "CSNOTIFY_CLOUDSTACK_URL": sim.url, "CSNOTIFY_CLOUDSTACK_API_KEY": "test-api-key",
               "CSNOTIFY_CLOUDSTACK_SECRET_KEY": "test-secret-key"}  # fmt: skip
        # the first run starts at the beginning of the simulated history; restarts resume the cursor
        args = ("--source", "api", "--interval", "0.2")
        proc = kill_and_restart(rx, env, args, len(expected), first=("--since", "1h"))
        duplicates = finish(rx, proc, "api", expected)
    # the cursor is written with the deliveries it covers: only what was in flight comes again
    assert duplicates <= KILLS * IN_FLIGHT
