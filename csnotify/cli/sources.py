"""Where events come from: listen (the pipeline), events (query CloudStack), simulate (a
CloudStack stand-in)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.exceptions import Exit

from csnotify.cli.common import (
    LEVELS,
    SOURCE_NAMES,
    AppState,
    _masked,
    app,
    finite,
    given,
    render,
    state,
)
from csnotify.errors import BadInput
from csnotify.exitcodes import ExitCode

if TYPE_CHECKING:
    import asyncio
    from datetime import datetime

    from csnotify.config import Settings
    from csnotify.events import Event
    from csnotify.store import Store


SOURCES = ("api", "amqp", "stdin")


@app.command()
def listen(
    ctx: typer.Context,
    source: str = typer.Option(
        "api",
        "--source",
        "-s",
        metavar="api|amqp|stdin",
        help="Where events come from.",
        autocompletion=SOURCE_NAMES,
    ),
    once: bool = typer.Option(
        False, "--once", help="api: one poll; amqp: what is queued; stdin: to EOF."
    ),
    interval: float = typer.Option(
        30.0, "--interval", min=0.1, callback=finite, help="Seconds between API polls."
    ),
    since: str | None = typer.Option(
        None, "--since", metavar="TIME", help="api: start here (ISO time or 30m, 2h, 1d)."
    ),
    print_events: bool = typer.Option(
        False, "--print", help="Also write each event as a JSON line on stdout."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Match and show; send and acknowledge nothing."
    ),
    log_format: str = typer.Option(
        "text", "--log-format", metavar="text|json", help="Log lines on stderr."
    ),
    duration: float | None = typer.Option(
        None, "--duration", min=0.1, callback=finite, help="Stop by itself after N seconds."
    ),
    api: str | None = typer.Option(
        None,
        "--api",
        metavar="HOST:PORT",
        help="Also serve the HTTP API there, in this process (as 'csnotify serve --listen').",
    ),
) -> None:
    """Run the pipeline: take events off a source and deliver them until stopped.

    api polls CloudStack's listEvents with the configured keys (cloudstack.*), keeping a
    cursor in the store so a restart neither loses nor repeats events; times go out in
    the server's zone (learned, or cloudstack.timezone) and every page of a poll is read
    completely, at the page size the server allows. amqp consumes
    CloudStack's RabbitMQ event bus (amqp.*) from a durable queue that several listeners
    can share; each message is acknowledged once its deliveries are in the store. stdin reads
    JSON lines. SIGTERM or SIGINT: deliveries in flight finish, then it exits 0.
    Subscriptions changed meanwhile take effect within about a second.

    \b
    Examples:
      csnotify listen --source amqp
      csnotify listen --source api --interval 10
      csnotify listen --source api --once --since 1h     # from cron
      csnotify listen --source amqp --print --dry-run | jq .type
      csnotify listen --source amqp --api 127.0.0.1:8787   # and the API, one process
    """
    import asyncio

    from csnotify import aio, logs
    from csnotify.delivery.settings import DeliverySettings
    from csnotify.listen import Listener, ListenOptions
    from csnotify.output import printable
    from csnotify.sources.make import make_source

    if source not in SOURCES:
        raise BadInput(f"unknown --source {source!r}; use one of {', '.join(SOURCES)}")
    if log_format not in logs.FORMATS:
        raise BadInput(f"unknown --log-format {log_format!r}; use text or json")
    app_state = state(ctx)
    serve_at = _api_address(api, once or dry_run, app_state)
    logs.setup(app_state.terminal.stderr, app_state.verbose, app_state.quiet, log_format)
    settings = app_state.settings()
    options = ListenOptions(
        once=once, dry_run=dry_run, print_events=print_events, duration=duration
    )
    terminal = app_state.terminal

    stop, reader_gone = asyncio.Event(), asyncio.Event()

    def out(line: str) -> None:
        if reader_gone.is_set():
            return
        try:
            terminal.stdout.write(printable(line) + "\n")
            terminal.stdout.flush()
        except BrokenPipeError:  # `listen --print | head`: the reader is done, so are we
            terminal.stdout_gone()
            reader_gone.set()
            stop.set()

    async def run() -> int:
        from csnotify.events import parse_alert_levels
        from csnotify.names import from_settings

        names = from_settings(settings) if source != "api" else None
        listener = Listener(
            app_state.store(), DeliverySettings.from_settings(settings), options, out, stop=stop,
            names=names, alert_levels=parse_alert_levels(settings["cloudstack.alert_levels"]),
        )  # fmt: skip
        src = make_source(source, settings, interval=interval, since=start, once=once,
                          stdin=terminal.text_input() if source == "stdin" else None)  # fmt: skip
        serving = await _serve_beside(app_state, settings, serve_at, stop)
        try:
            await listener.run(src)
        finally:
            stop.set()
            if serving is not None:
                await serving
            for client in (getattr(src, "client", None), names and names.client):
                if client is not None:
                    await client.close()
        return listener.rejected

    start = _start_time(since)
    _log_start(source, settings, interval, app_state.store())
    rejected = aio.run(run())
    if reader_gone.is_set():
        raise Exit(int(ExitCode.READER_GONE))
    if rejected and source == "stdin":
        raise Exit(int(ExitCode.FAILED))


def _api_address(api: str | None, one_shot: bool, app_state: AppState) -> tuple[str, int] | None:
    """``listen --api``: where to serve, checked with the api.* settings before anything
    starts."""
    if api is None:
        return None
    if one_shot:
        raise BadInput("--api serves while listen runs; drop --once and --dry-run with it")
    from csnotify.cli.serve import api_address

    return api_address(api, app_state, "--api")


async def _serve_beside(
    app_state: AppState, settings: Settings, at: tuple[str, int] | None, stop: asyncio.Event
) -> asyncio.Task[Any] | None:
    """``listen --api``: the API served in this process until ``stop``, on its own
    connection to the store; returns once it listens (or raises why it cannot)."""
    if at is None:
        return None
    import asyncio

    from csnotify.api.server import serve as run_server
    from csnotify.cli.serve import announcer
    from csnotify.store import open_store

    store = open_store(app_state.db, app_state.terminal.environ)
    listening = asyncio.get_running_loop().create_future()
    announce = announcer(app_state, store)

    def ready(url: str) -> None:
        announce(url)
        listening.set_result(url)

    async def serve() -> None:
        try:
            await run_server(store, settings, *at, ready, stop, option="--api")
        finally:
            store.close()

    task = asyncio.ensure_future(serve())
    await asyncio.wait([task, listening], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises why it could not listen
    return task


def _log_start(source: str, settings: Settings, interval: float, store: Store) -> None:
    """One line at start, so that a journal says what runs even when nothing happens."""
    import logging

    from csnotify.logs import NOTICE
    from csnotify.redact import mask_uri

    where = {
        "api": f"{mask_uri(settings['cloudstack.url'])} every {interval:g} s",
        "amqp": f"{mask_uri(settings['amqp.url'])}, queue {settings['amqp.queue']!r} on"
        f" exchange {settings['amqp.exchange']!r}",
        "stdin": "standard input",
    }[source]
    subs = store.subscriptions()
    logger = logging.getLogger("csnotify")
    logger.log(
        NOTICE,
        "listening: source %s, %s; %d subscriptions (%d enabled)",
        source,
        where,
        len(subs),
        sum(s.enabled for s in subs),
    )
    if source == "amqp" and not (
        settings["cloudstack.api_key"] and settings["cloudstack.secret_key"]
    ):
        from csnotify.names import names_hint

        hint = names_hint(subs)
        if hint:
            logger.warning("%s", hint)


def _start_time(since: str | None) -> datetime | None:
    """--since of the api source, checked before anything starts."""
    from csnotify.events import parse_since

    start = parse_since(since) if since else None
    if start is not None and start.timestamp() > time.time() + 60:
        # the cursor would wait there and every poll until then would deliver nothing
        raise BadInput(f"--since {since!r} is in the future; give a past time or 30m, 2h, 1d")
    return start


@app.command()
def events(
    ctx: typer.Context,
    type_: str | None = typer.Option(None, "--type", help="Exact event type, e.g. VM.CREATE."),
    level: str | None = typer.Option(
        None, "--level", metavar="INFO|WARN|ERROR", autocompletion=LEVELS
    ),
    since: str | None = typer.Option(
        None, "--since", metavar="TIME", help="ISO time or 30m, 2h, 1d."
    ),
    until: str | None = typer.Option(None, "--until", metavar="TIME"),
    account: str | None = typer.Option(None, "--account", help="Account name."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="At most this many, newest first."),
    as_json: bool = typer.Option(
        False, "--json", help="One normalised event per line (JSON lines)."
    ),
) -> None:
    """Query CloudStack's listEvents with the configured keys, newest first.

    --since and --until (UTC unless given with an offset, or relative: 10m, 2h, 1d) are
    sent in the server's time zone (learned from the events' created offsets, or
    cloudstack.timezone) and the answer is kept to exactly that window.

    \b
    Examples:
      csnotify events --since 1h
      csnotify events --type VM.CREATE --level ERROR --limit 10
      csnotify events --json --since 1d | csnotify dispatch -
    """
    from csnotify import aio
    from csnotify.cloudstack import CloudStackClient, Credentials, recent_events
    from csnotify.events import from_list_item, parse_since
    from csnotify.matching import parse_level

    app_state = state(ctx)
    creds = Credentials.from_settings(app_state.settings())
    start = parse_since(since) if since else None
    end = parse_since(until) if until else None
    if start and end and start > end:
        raise BadInput("--since is after --until; swap them")
    filters = {"type": type_, "level": parse_level(level) if level else None, "account": account}

    async def query() -> list[dict[str, Any]]:
        async with CloudStackClient(creds) as client:
            wanted = {k: v for k, v in filters.items() if v}
            return await recent_events(client, start, end, wanted, limit)

    rows = aio.run(query())
    found = [from_list_item(r) for r in rows if isinstance(r.get("id"), str) and r.get("type")]
    render(app_state, found, as_json, _events_text, lines=True)


def _events_text(app_state: AppState, found: list[Event]) -> None:
    if not found:
        app_state.terminal.err("no events")
        return
    table = [
        [
            e.created,
            e.type,
            e.level,
            e.state,
            e.account,
            e.resource_name or e.resource_id,
            e.description,
        ]
        for e in found
    ]
    columns = ["CREATED", "TYPE", "LEVEL", "STATE", "ACCOUNT", "RESOURCE", "DESCRIPTION"]
    app_state.terminal.table(columns, table, optional=["ACCOUNT", "STATE"])


@app.command()
def simulate(
    ctx: typer.Context,
    listen_on: str = typer.Option(
        "127.0.0.1:8080", "--listen", metavar="HOST:PORT", help="API address (port 0: any)."
    ),
    amqp: str | None = typer.Option(
        None, "--amqp", metavar="URL", help="Also publish to this RabbitMQ."
    ),
    exchange: str = typer.Option(
        "cloudstack-events", "--exchange", help="Topic exchange to publish to."
    ),
    rate: str = typer.Option(
        "10/s", "--rate", metavar="N/s", help="Events per second (0: as fast as possible)."
    ),
    count: int | None = typer.Option(
        None, "--count", min=0, help="Stop generating after N events."
    ),
    replay: Path | None = typer.Option(
        None, "--replay", metavar="FILE", help="Replay these events instead."
    ),
    api_key: str | None = typer.Option(
        None, "--api-key", help="API key to accept (default: random)."
    ),
    secret_key: str | None = typer.Option(
        None,
        "--secret-key",
        envvar="CSNOTIFY_SIMULATE_SECRET_KEY",
        help="Secret key (default: random).",
    ),
    seed: int | None = typer.Option(None, "--seed", help="Make the generated events repeatable."),
    record: Path | None = typer.Option(
        None, "--record", metavar="FILE", help="Append each event here (JSON lines)."
    ),
    timezone: str | None = typer.Option(
        None,
        "--timezone",
        metavar="ZONE",
        help="The server's (JVM's) zone for created and startdate/enddate (default: this host's).",
    ),
    max_page_size: int = typer.Option(
        500, "--max-page-size", metavar="N", help="default.page.size: larger pagesize gets 431."
    ),
    start: str | None = typer.Option(
        None,
        "--start",
        metavar="TIME",
        help="The server's clock starts at TIME (e.g. just before a DST change) and runs on.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the connection details as one JSON line."
    ),
) -> None:
    """A CloudStack stand-in: the signed listEvents API at /client/api and, with --amqp,
    RabbitMQ publishing exactly as CloudStack's event bus does, fed with realistic events
    of all five categories. Runs until SIGTERM or SIGINT.

    It behaves as CloudStack does where deployments surprise clients: created and dates
    in the server's zone, ties within a second in a new order on every query, 431 above
    the page size limit, GET or POSTed parameters (see README, "Tested against").

    \b
    Examples:
      csnotify simulate --rate 50/s
      csnotify simulate --timezone America/New_York --max-page-size 100
      csnotify simulate --amqp amqp://guest:guest@127.0.0.1:5672/ --count 1000 --json
      csnotify simulate --replay captured-events.jsonl --rate 0
    """
    import asyncio
    import contextlib
    import signal

    from csnotify import aio
    from csnotify.simulator.run import SimulatorOptions
    from csnotify.simulator.run import simulate as run_simulator

    try:
        per_second = float(rate.removesuffix("/s"))
        if per_second < 0:
            raise ValueError
    except ValueError:
        raise BadInput(f"--rate {rate!r}: use a number of events per second, e.g. 100/s") from None
    from csnotify.events import parse_time
    from csnotify.servertime import host_zone, parse_zone

    if max_page_size < 1:
        raise BadInput(f"--max-page-size {max_page_size}: use a page size of 1 or more")
    app_state = state(ctx)
    terminal = app_state.terminal
    zone = parse_zone(timezone) if timezone is not None else host_zone(terminal.environ)
    first = parse_time(start) if start else None
    options = SimulatorOptions(
        timezone=zone,
        max_page_size=max_page_size,
        start=first,
        listen=listen_on,
        amqp=amqp,
        exchange=exchange,
        rate=per_second,
        count=count,
        replay=replay,
        api_key=api_key,
        secret_key=given(ctx, "secret_key", secret_key, "CSNOTIFY_SIMULATE_SECRET_KEY"),
        seed=seed,
        record=record,
    )

    def ready_text(app_state: AppState, info: dict[str, Any]) -> None:
        terminal.out(f"CloudStack simulator: API on {info['url']}")
        terminal.out(f"  api key:    {info['api_key']}")
        terminal.out(f"  secret key: {info['secret_key']}")
        if info["amqp"]:
            terminal.out(f"  publishing to exchange {info['exchange']} on {_masked(amqp)}")

    def ready(info: dict[str, Any]) -> None:
        render(app_state, info, as_json, ready_text, lines=True)
        terminal.stdout.flush()

    def done(made: int) -> None:
        render(app_state, {"generated": made}, as_json, _generated_text, lines=True)
        terminal.stdout.flush()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await run_simulator(options, ready, done, stop)

    aio.run(run())


def _generated_text(app_state: AppState, done: dict[str, int]) -> None:
    app_state.terminal.out(f"generated {done['generated']} events; serving until stopped")
