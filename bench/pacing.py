"""What mutes and rate limits cost the dispatcher, as ratios against a plain run measured
in the same process, and how fast a storm is folded into a digest.

Usage: .venv/bin/python bench/pacing.py [--events 5000] [--rounds 3]

Each run: one signed webhook subscription on a loopback aiohttp receiver (its own
process), N events submitted to the dispatcher, timed until every event is decided
(delivered, muted or folded). Runs, in rotation, best of R rounds each:
- plain: no mute, no limit (the baseline);
- 50 mutes in force, none of which covers the events (the check on every delivery);
- a limit of 100,000 a minute, never reached (the window kept on every delivery);
- a storm: a limit of 10 a minute, so 10 are delivered and N - 10 folded into a digest;
- muted: one mute covering every event (recorded, nothing sent).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_section
from throughput import make_events, start_receiver

from csnotify import aio
from csnotify.delivery.pipeline import Pipeline
from csnotify.delivery.settings import DeliverySettings
from csnotify.mutes import MuteInput, mute
from csnotify.store import Store
from csnotify.subscriptions import SubscriptionInput, subscribe

RUNS = ("plain", "50 mutes, none covering", "limit never reached", "storm: limit 10/min", "muted")


def prepare(path: Path, url: str, run: str) -> Store:
    store = Store.open(path)
    rate = {"limit never reached": "100000", "storm: limit 10/min": "10"}.get(run)
    spec = SubscriptionInput(["VM.*"], [url], name="hooks", key="generate", max_per_minute=rate)
    subscribe(store, spec)
    # another subscription, not matched by the events, for the mutes that do not cover them
    subscribe(store, SubscriptionInput(["VOLUME.*"], [url + "-other"], name="other"))
    if run == "50 mutes, none covering":
        for i in range(25):
            mute(store, MuteInput("other", duration="1h", reason=f"window {i}"))
            mute(store, MuteInput("hooks", pattern=f"VOLUME.X{i}", duration="1h", reason="x"))
    if run == "muted":
        mute(store, MuteInput("hooks", duration="1h", reason="all of it"))
    return store


async def measure(store: Store, n: int) -> tuple[float, dict[str, int]]:
    events = make_events(n)
    decided = asyncio.Event()
    count = 0

    def outcome(_record: object) -> None:  # one record per event: delivered, muted, folded
        nonlocal count
        count += 1
        if count == n:
            decided.set()

    async with Pipeline(store, DeliverySettings(timeout=10), on_outcome=outcome) as dispatcher:
        dispatcher.load(store.subscriptions(), store.mutes())
        start = time.perf_counter()
        for event in events:
            await dispatcher.submit(event)
        await decided.wait()
        elapsed = time.perf_counter() - start
        await dispatcher.close(drain=False)  # the storm's digest would wait a minute
    return elapsed, dispatcher.stats.as_json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.events
    receiver, base = start_receiver()
    best: dict[str, float] = {}
    outcome: dict[str, dict[str, int]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for round_ in range(args.rounds):
                for i, run in enumerate(RUNS):
                    store = prepare(Path(tmp) / f"{round_}-{i}.db", f"{base}/pacing-{i}", run)
                    try:
                        elapsed, stats = aio.run(measure(store, n))
                    finally:
                        store.close()
                    best[run] = min(best.get(run, elapsed), elapsed)
                    outcome[run] = stats
    finally:
        receiver.terminate()
    plain = best["plain"]
    lines = [
        "## Mutes and rate limits (bench/pacing.py)",
        "",
        f"Command: `.venv/bin/python bench/pacing.py --events {n} --rounds {args.rounds}`."
        " One signed webhook on a loopback aiohttp receiver; the dispatcher in-process on"
        " uvloop; each figure the best of the rounds, timed until every event is decided"
        " (delivered, muted or folded). Ratio: events/s against the plain run of the same"
        " process.",
        "",
        "| run | events/s | ratio to plain | delivered | muted | folded |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in RUNS:
        s = outcome[run]
        lines.append(
            f"| {run} | {n / best[run]:,.0f} | {plain / best[run]:.2f} | {s['delivered']:,}"
            f" | {s['muted']:,} | {s['folded']:,} |"
        )
    body = "\n".join(lines)
    write_section("pacing", body)
    print(body)


if __name__ == "__main__":
    main()
