"""A loopback webhook receiver for the benchmarks (aiohttp, its own process).

POST /<anything> answers 200 and counts per path; /slow/<anything> sleeps 5 s first;
/hang/<anything> never answers (an endpoint that is up but dead);
/timed/<anything> also notes when the event of each resource id arrived (wall clock,
comparable across processes on one machine). GET /stats returns the counts, GET /times
the arrival times.
The port is printed on stdout.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time

from aiohttp import web

counts: collections.Counter[str] = collections.Counter()
arrivals: dict[str, float] = {}


async def receive(request: web.Request) -> web.Response:
    body = await request.read()
    if request.path.startswith("/slow"):
        await asyncio.sleep(5)
    elif request.path.startswith("/hang"):
        counts[request.path] += 1
        await asyncio.sleep(3600)
    elif request.path.startswith("/timed"):
        arrivals[json.loads(body)["event"]["resource_id"]] = time.time()
    counts[request.path] += 1
    return web.Response(text="ok")


async def stats(_request: web.Request) -> web.Response:
    return web.json_response(dict(counts))


async def times(_request: web.Request) -> web.Response:
    return web.json_response(arrivals)


async def main() -> None:
    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_get("/times", times)
    app.router.add_post("/{tail:.*}", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
