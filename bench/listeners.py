"""Several listeners on one store (issue 15, point 8): bus drain with one and with two
`csnotify listen --source amqp` processes sharing one queue and one store, on SQLite (a
shared file), MariaDB (127.0.0.1:3306) and PostgreSQL (127.0.0.1:5432); and what claiming
a pending delivery costs on each, all in one run.

Usage: .venv/bin/python bench/listeners.py [--events 3000] [--claims 3000] [--rounds 3]
       [--stores sqlite,mysql,postgresql] [--listener-cores 0.35] [--profile PREFIX]
(--listener-cores needs root and cgroup v1's cpu controller at /sys/fs/cgroup/cpu; its
results go into a section of their own.)

Measures:
- drain: M bus messages wait in the queue (a backlog, as after an outage), then one or
  two listeners start and drain it; messages a second from the first receipt at a signed
  webhook (an aiohttp receiver in its own process) to the last. Rates, and two listeners
  against one on the same store. Goal: two listeners on a server database drain at
  >= 1.5x one listener.
- CPU by role: what the listeners, the database server, the broker, the receiver and the
  rest of the machine spent per 1,000 events during the drain (/proc), and how busy the
  machine was. On a machine with few cores this tells whether the listeners or the
  machine set the limit.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import Bus, get_json
from results import write_section
from store import REPO, drop_database, new_database  # as bench/store.py makes them

NAMES = {"sqlite": "SQLite (one file)", "mysql": "MariaDB", "postgresql": "PostgreSQL"}


@contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    """A fresh store for one measurement: a SQLite file, or a server database dropped after."""
    url = new_database(kind, tmp)
    try:
        yield url
    finally:
        drop_database(kind, url)


TICK = os.sysconf("SC_CLK_TCK")
GROUPS = {"mariadbd": "database", "postgres": "database", "beam.smp": "broker"}


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """Every process's command name and CPU seconds (user + system) so far."""
    out: dict[int, tuple[str, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :]
        fields = rest.split()
        out[int(stat.parent.name)] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def machine_busy() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine so far (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / TICK, sum(fields) / TICK


def cpu_used(before: dict[int, tuple[str, float]], roles: dict[int, str]) -> dict[str, float]:
    """CPU seconds spent since ``before``, by role: the pids in ``roles`` by theirs, the
    servers by GROUPS, everything else 'other'."""
    used: dict[str, float] = {}
    for pid, (name, now) in cpu_by_process().items():
        spent = now - before.get(pid, (name, 0.0))[1]
        role = roles.get(pid) or GROUPS.get(name, "other")
        used[role] = used.get(role, 0.0) + spent
    return used


CGROUP_CPU = Path("/sys/fs/cgroup/cpu")  # cgroup v1's cpu controller


class CpuBudget:
    """Each listener in a cgroup of its own with a CPU quota (``--listener-cores``), as on
    a host of its own: on a machine this small the listeners otherwise share the cores
    with the broker, the database and the receiver, and the machine sets the ratio."""

    def __init__(self, cores: float) -> None:
        if not (CGROUP_CPU / "cpu.cfs_quota_us").exists():
            raise SystemExit(f"--listener-cores needs cgroup v1's cpu controller at {CGROUP_CPU}")
        self.cores = cores
        self.groups: list[Path] = []

    def prefix(self) -> list[str]:
        """A command line before the listener's: a shell that joins a new group with the
        quota, then becomes the listener."""
        group = CGROUP_CPU / f"csnotify-bench-{os.getpid()}-{len(self.groups)}"
        group.mkdir()
        self.groups.append(group)
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text(str(int(self.cores * 100_000)))
        return ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh"]

    def close(self) -> None:
        for group in self.groups:
            group.rmdir()
        self.groups = []


BUDGET: CpuBudget | None = None


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


# CPU ms per 1,000 events by role, and the machine's busy share, per drain
CPU: dict[tuple[str, int], list[dict[str, float]]] = {}


async def drain(tmp: Path, kind: str, listeners: int, count: int, profile: str | None) -> float:
    """A backlog of ``count`` bus messages drained: messages a second from the first
    receipt at the webhook to the last (receiver's clock). What each role spent of the
    CPU over the same span (from the first receipt seen) goes into CPU."""
    with database(kind, tmp) as url:
        bus = Bus(tmp, f"{kind}-{listeners}")
        bus.env["CSNOTIFY_DB"] = url
        await bus.connect()
        bus.subscribe(f"{bus.base}/timed/drain", "drain")
        await bus.declare()
        for i in range(count):
            await bus.publish(4_000_000 + i)
        while await bus.queued() < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        procs = [bus.listen(prefix=BUDGET.prefix() if BUDGET else ()) for _ in range(listeners)]
        roles = {proc.pid: "listeners" for proc in procs}
        roles |= {bus.receiver.pid: "receiver", os.getpid(): "bench"}
        if profile:  # py-spy on the first listener
            spy = subprocess.Popen(  # noqa: ASYNC220 - started once, before timing
                [str(REPO / ".venv" / "bin" / "py-spy"), "record", "-r", "300", "-f", "raw",
                 "--idle", "-o", profile, "--pid", str(procs[0].pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            await bus.wait("/timed/drain", 1, 60)
            before, busy0 = cpu_by_process(), machine_busy()
            got = await bus.wait("/timed/drain", count, 300)
            used, busy1 = cpu_used(before, roles), machine_busy()
            arrivals = sorted(get_json(bus.base + "/times").values())
            rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
        finally:
            for proc in procs:
                stop(proc)
            if BUDGET:
                BUDGET.close()
            if profile:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=30)
            await bus.close()
    assert got == count, (kind, listeners, got)
    share = {role: spent * 1e6 / (count - 1) for role, spent in used.items()}
    share["machine busy"] = (busy1[0] - busy0[0]) / (busy1[1] - busy0[1])
    CPU.setdefault((kind, listeners), []).append(share)
    return rate


def claim_cost(tmp: Path, kind: str, count: int, batch: int) -> float:
    """Microseconds per delivery claimed ``batch`` at a time."""
    from csnotify.delivery.outbox import Changes, Outbox, PendingRow
    from csnotify.events import from_normalised
    from csnotify.store import open_store

    with database(kind, tmp) as url:
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


ROLES = ("listeners", "database", "broker", "receiver", "bench", "other")


def ceiling(kind: str) -> float:
    """Events a second if every core went to the drain at one listener's CPU cost per
    event (the medians of its rounds; what else ran on the machine left out)."""
    per_event = statistics.median(
        sum(r.get(role, 0.0) for role in ROLES if role != "other") for r in CPU[kind, 1]
    )  # ms per 1,000 events
    return (os.cpu_count() or 1) * 1e6 / per_event


def cpu_table(kinds: list[str]) -> list[str]:
    """CPU ms per 1,000 events by role (medians of the rounds) and the machine's busy share."""
    lines = [
        "CPU spent per 1,000 events, by role (ms, from /proc, medians of the rounds), and how"
        " busy the whole machine was during the drain:",
        "",
        "| store | running | " + " | ".join(ROLES) + " | all | machine busy |",
        "|---|---:|" + "---:|" * (len(ROLES) + 2),
    ]
    for kind in kinds:
        for n in (1, 2):
            runs = CPU.get((kind, n), [])
            if not runs:
                continue
            keys = (*ROLES, "machine busy")
            med = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in keys}
            cells = " | ".join(f"{med[role]:.0f}" for role in ROLES)
            total = sum(med[role] for role in ROLES)
            lines.append(
                f"| {NAMES[kind]} | {n} | {cells} | {total:.0f} | {med['machine busy']:.0%} |"
            )
    return lines


async def main(events: int, claims: int, rounds: int, profile: str | None, kinds: list[str]) -> str:
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
    base = rates.get(("sqlite", 1))
    budget = f" --listener-cores {BUDGET.cores:g}" if BUDGET else ""
    lines = [
        "## Several listeners on one store"
        + (f", each on {BUDGET.cores:g} of a core" if BUDGET else "")
        + " (bench/listeners.py)",
        "",
        f"Command: `.venv/bin/python bench/listeners.py --events {events} --claims {claims}"
        f" --rounds {rounds}{budget}`; drain rates are medians of the rounds, one and two"
        " listeners alternating."
        f" A backlog of {events:,} messages in a real RabbitMQ queue is drained by"
        " `csnotify listen --source amqp` with the default settings, one or two processes on"
        " that queue and one store (MariaDB, PostgreSQL on 127.0.0.1, or a SQLite file), into"
        " one signed webhook (an aiohttp receiver in its own process); rate from the first"
        f" receipt to the last. The machine has {os.cpu_count()} cores for all of them"
        + (
            f"; each listener runs in a cgroup of its own with a CPU quota of {BUDGET.cores:g}"
            " of a core, as on a host of its own, so that the listeners, not the machine"
            " they share with the broker, the database and the receiver, set the rate."
            if BUDGET
            else "."
        ),
        "",
        "The ceiling is what this machine allows two listeners at most: all its cores spent"
        " on the drain at one listener's CPU cost per event (listeners, database, broker,"
        " receiver, the bench polling it; not what else ran), against one listener's rate.",
        "",
        "| store | one listener | two listeners | two / one | ceiling here | one listener /"
        " SQLite's |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in kinds:
        one, two = rates[kind, 1], rates[kind, 2]
        lines.append(
            f"| {NAMES[kind]} | {one:,.0f}/s | {two:,.0f}/s | {two / one:.2f}x |"
            f" {ceiling(kind) / one:.2f}x | {f'{one / base:.2f}' if base else '-'} |"
        )
    lines += ["", *cpu_table(kinds)]
    if base is None:
        return "\n".join(lines)
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

    def verdict(kind: str) -> str:
        if rates[kind, 2] / rates[kind, 1] >= 1.5:
            return "yes"
        if ceiling(kind) / rates[kind, 1] < 1.5:
            return "not measurable on this machine (its ceiling is below 1.5x)"
        return "NO"

    lines += [
        "",
        "Goal (two listeners on a server database drain at >= 1.5x one): "
        + ", ".join(f"{NAMES[k]} {verdict(k)}" for k in kinds if k != "sqlite")
        + ".",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--claims", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", help="py-spy raw output prefix (first listener, servers)")
    parser.add_argument(
        "--stores", default="sqlite,mysql,postgresql", help="which stores (results not saved"
        " unless all three)"
    )  # fmt: skip
    parser.add_argument(
        "--listener-cores", type=float, help="each listener in a cgroup with this CPU quota"
    )
    args = parser.parse_args()
    kinds = args.stores.split(",")
    if args.listener_cores:
        BUDGET = CpuBudget(args.listener_cores)
    body = asyncio.run(main(args.events, args.claims, args.rounds, args.profile, kinds))
    if not args.profile and len(kinds) == 3:
        write_section("listeners-budget" if BUDGET else "listeners", body)
    print(body)
