"""What resolving names costs a bus event (issue 13), against the simulator's API served
on loopback in this process.

1. Warm cache: the time ``Names.enrich`` adds to an event whose names are known, against
   parsing the same bus message (``parse_bus_body``), measured in the same run.
2. Burst: 10,000 bus events about 100 resources (and one user) arrive at once with a cold
   cache and an API that takes 20 ms an answer: how many look-ups reach the API, how many
   run at once at most, against ``cloudstack.lookups_in_flight``.

Usage: .venv/bin/python bench/names.py
Targets: enrichment adds < 1 ms p99 per event with a warm cache; during the burst the
look-ups are one per UUID and never more than lookups_in_flight at once.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_section

from csnotify.cloudstack import CloudStackClient, Credentials
from csnotify.events import gson_dumps, parse_bus_body
from csnotify.names import Names
from csnotify.simulator.generator import ACCOUNT_UUID, USER_UUID, routing_key
from csnotify.simulator.server import Api, EventLog

EVENTS = 10_000
RESOURCES = 100
API_DELAY_S = 0.020
IN_FLIGHT = 4
# What the events name: the VMs, the user, and the user's domain (listDomains gives its
# path, which owners' scope compares).
UUIDS = RESOURCES + 2


def messages() -> list[tuple[str, bytes]]:
    """Completed VM.START ActionEvents as ActionEventUtils publishes them, round-robin over
    RESOURCES virtual machines."""
    out = []
    for i in range(EVENTS):
        vm = f"00000000-0000-4000-8000-{i % RESOURCES:012d}"
        body = {"eventDateTime": f"2024-05-14 10:{i // 60 % 60:02d}:{i % 60:02d} +0000",
                "entityuuid": vm, "description": "starting Vm", "event": "VM.START",
                "user": USER_UUID, "account": ACCOUNT_UUID, "entity": "VirtualMachine",
                "status": "Completed", "VirtualMachine": vm}  # fmt: skip
        key = routing_key("ActionEvent", "VM.START", "VirtualMachine", vm)
        out.append((key, gson_dumps(body).encode()))
    return out


class Counted:
    """The simulator's API with a fixed answer time, counting requests in flight."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.now = 0
        self.peak = 0
        self.calls = 0

    async def handle(self, request: object) -> object:
        self.now += 1
        self.calls += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(API_DELAY_S)
            return await self.api.handle(request)
        finally:
            self.now -= 1


async def serve(counted: Counted) -> tuple[object, str]:
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/client/api", counted.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}/client/api"


async def main() -> None:
    api = Api("bench-key", "bench-secret", EventLog())
    for n in range(RESOURCES):
        api.directory.add("VirtualMachine", {"id": f"00000000-0000-4000-8000-{n:012d}",
                                             "name": f"vm-{n:03d}"})  # fmt: skip
    counted = Counted(api)
    runner, url = await serve(counted)
    client = CloudStackClient(Credentials(url, "bench-key", "bench-secret"), timeout=10)
    names = Names(client, in_flight=IN_FLIGHT, timeout=30)
    raw = messages()

    # -- burst, cold cache: every event starts its look-ups on arrival, then they are
    # accepted in order (as Listener.handle does)
    events = [parse_bus_body(body, key) for key, body in raw]
    started = time.perf_counter()
    for event in events:
        names.start(event)
    for event in events:
        await names.enrich(event)
    burst_s = time.perf_counter() - started
    named = sum(1 for e in events if e.resource_name and e.username)

    # -- warm cache: enrichment time per event against parsing time per event
    parse_us, enrich_us = [], []
    for key, body in raw:
        t0 = time.perf_counter()
        event = parse_bus_body(body, key)
        t1 = time.perf_counter()
        await names.enrich(event)
        t2 = time.perf_counter()
        parse_us.append((t1 - t0) * 1e6)
        enrich_us.append((t2 - t1) * 1e6)
    await client.close()
    await runner.cleanup()

    def p99(values: list[float]) -> float:
        return statistics.quantiles(values, n=100)[98]

    calls_ok = counted.calls == UUIDS
    peak_ok = counted.peak <= IN_FLIGHT
    warm_ok = p99(enrich_us) < 1000
    delay_ms = f"{API_DELAY_S * 1000:.0f}"
    ratio = statistics.median(enrich_us) / statistics.median(parse_us)
    body = f"""## Names for bus events (bench/names.py)

Command: `.venv/bin/python bench/names.py`. The simulator's API on loopback in the same
process, answering each request after {delay_ms} ms. {EVENTS:,} Completed VM.START
ActionEvents about {RESOURCES} virtual machines, one user and its domain. Targets (issue 13):
enrichment adds < 1 ms p99 per event with a warm cache; during a burst the look-ups stay
one per UUID and at most `cloudstack.lookups_in_flight` ({IN_FLIGHT}) at once.

| warm cache | median us/event | p99 us/event | ratio to parsing (median) |
|---|---:|---:|---:|
| parse_bus_body (baseline) | {statistics.median(parse_us):.1f} | {p99(parse_us):.1f} | 1.00x |
| Names.enrich | {statistics.median(enrich_us):.1f} | {p99(enrich_us):.1f} | {ratio:.2f}x |

| burst, cold cache | figure |
|---|---:|
| events | {EVENTS:,} |
| API look-ups made | {counted.calls} (one per UUID: {UUIDS}) |
| look-ups per event | {counted.calls / EVENTS:.4f} |
| most look-ups in flight at once | {counted.peak} (limit {IN_FLIGHT}) |
| events named when accepted | {named:,} of {EVENTS:,} |
| burst accepted in | {burst_s:.2f} s ({EVENTS / burst_s:,.0f} events/s) |

Target met: {"yes" if calls_ok and peak_ok and warm_ok else "no"}.
"""
    print(body)
    write_section("names", body)


if __name__ == "__main__":
    asyncio.run(main())
