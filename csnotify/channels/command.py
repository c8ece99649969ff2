"""``cmd:/PROGRAM ARGS``: run a local program (the DNS/CMDB/LDAP updater case).

No shell is involved: the URI is split like a shell would split words, and the program
(an absolute path) gets the event JSON on stdin. Its environment is minimal: ``PATH``,
``HOME``, ``LANG``, ``TZ``, ``CSNOTIFY_EVENT_TYPE`` / ``CSNOTIFY_EVENT_ID`` /
``CSNOTIFY_SUBSCRIPTION`` and the variables ``delivery.command_env`` names; never
csnotify's own secrets (API secret key, broker password, whatever an ``EnvironmentFile=``
holds). No descriptor of ours beyond 0-2 reaches it. Exit status 0 is success; otherwise
the tail of stderr is the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from csnotify.channels import command_argv, resolve_program
from csnotify.channels.base import ERROR_MAX, Attempt, Message

BASIC_ENV = ("PATH", "HOME", "LANG", "TZ")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
STDERR_KEPT = 4096  # bytes of stderr kept (its tail); the rest is read and dropped
STDERR_GRACE = 0.5  # s to finish reading stderr after the program exited


class CommandChannel:
    def __init__(self, environ: Mapping[str, str], passed_env: tuple[str, ...] = ()) -> None:
        """``environ``: the environment programs get their variables from (the basic ones
        and ``passed_env``), given by the caller: this module never reads the process's."""
        self.environ = environ
        self.passed_env = passed_env

    def environment(self, message: Message) -> dict[str, str]:
        names = (*BASIC_ENV, *self.passed_env)
        env = {name: self.environ[name] for name in names if name in self.environ}
        env.setdefault("PATH", DEFAULT_PATH)
        env["CSNOTIFY_EVENT_TYPE"] = message.event.type
        env["CSNOTIFY_EVENT_ID"] = message.event.id
        env["CSNOTIFY_SUBSCRIPTION"] = message.subscription.name
        return env

    async def send(self, message: Message, timeout: float) -> Attempt:
        argv = command_argv(message.uri)
        program = resolve_program(argv[0])
        if program is None:
            return Attempt.failed(
                f"{argv[0]} is not an absolute path to an executable file", retryable=False
            )
        payload = (
            json.dumps(message.event.as_json(), ensure_ascii=False, allow_nan=False).encode()
            + b"\n"
        )
        close_inherited_fds()
        try:
            proc = await asyncio.create_subprocess_exec(
                program,
                *argv[1:],
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=self.environment(message),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            return Attempt.failed(f"cannot run {argv[0]}: {exc.strerror}", retryable=False)
        try:
            stderr = await asyncio.wait_for(_talk(proc, payload), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
            return Attempt.failed(f"{argv[0]} timed out after {timeout:g} s (killed)")
        if proc.returncode == 0:
            return Attempt(ok=True, status=0)
        what = (
            f"exit status {proc.returncode}"
            if proc.returncode > 0
            else f"signal {-proc.returncode}"
        )
        head = f"{argv[0]}: {what}"
        tail = stderr.decode("utf-8", "replace").strip()[-max(0, ERROR_MAX - len(head) - 2) :]
        return Attempt.failed(head + (f": {tail}" if tail else ""), status=proc.returncode)

    async def close(self) -> None:
        return None


def close_inherited_fds() -> None:
    """Mark every descriptor above 2 close-on-exec. Ours are already (PEP 446), but one
    csnotify inherited from its parent is not, and uvloop (libuv) ignores ``close_fds``:
    without this a program would get it."""
    try:
        names = [entry.name for entry in Path("/proc/self/fd").iterdir()]
    except OSError:  # no /proc: asyncio's own spawn honours close_fds
        return
    for name in names:
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)


async def _talk(proc: asyncio.subprocess.Process, payload: bytes) -> bytes:
    """Give the program the event and keep the tail of its stderr; done when it exits.

    A program that exits without reading its input (/bin/false, a failing check) is its
    exit status, not our error: writing to its closed stdin raises BrokenPipeError, or
    RuntimeError under uvloop. A child it left in the background holding stderr open does
    not hold up the outcome: stderr is read for STDERR_GRACE after the exit, no longer."""
    stdin, errors = proc.stdin, proc.stderr
    if stdin is None or errors is None:  # both are pipes (PIPE above)
        raise RuntimeError("program started without pipes")
    tail = bytearray()

    async def feed() -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
            stdin.write(payload)
            await stdin.drain()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
            stdin.close()

    async def collect() -> None:
        while chunk := await errors.read(65536):
            tail.extend(chunk)
            del tail[:-STDERR_KEPT]

    feeding = asyncio.ensure_future(feed())
    reading = asyncio.ensure_future(collect())
    try:
        await proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reading), STDERR_GRACE)
    finally:
        for task in (feeding, reading):
            task.cancel()
        await asyncio.gather(feeding, reading, return_exceptions=True)
    return bytes(tail)
