"""``cmd:PROGRAM ARGS``: run a local program (the DNS/CMDB/LDAP updater case).

No shell is involved: the URI is split like a shell would split words, and the program
gets the event JSON on stdin and ``CSNOTIFY_EVENT_TYPE`` / ``CSNOTIFY_EVENT_ID`` in its
environment. Exit status 0 is success; otherwise the tail of stderr is the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

from csnotify.channels import command_argv, resolve_program
from csnotify.channels.base import ERROR_MAX, Attempt, Message


class CommandChannel:
    async def send(self, message: Message, timeout: float) -> Attempt:
        argv = command_argv(message.uri)
        program = resolve_program(argv[0])
        if program is None:
            return Attempt.failed(f"{argv[0]} is not an executable file", retryable=False)
        event = message.event
        env = {
            **os.environ,
            "CSNOTIFY_EVENT_TYPE": event.type,
            "CSNOTIFY_EVENT_ID": event.id,
            "CSNOTIFY_SUBSCRIPTION": message.subscription.name,
        }
        payload = json.dumps(event.as_json(), ensure_ascii=False).encode() + b"\n"
        try:
            proc = await asyncio.create_subprocess_exec(
                program,
                *argv[1:],
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
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
        tail = stderr.decode("utf-8", "replace").strip()[-ERROR_MAX:]
        what = (
            f"exit status {proc.returncode}"
            if proc.returncode > 0
            else f"signal {-proc.returncode}"
        )
        return Attempt.failed(
            f"{argv[0]}: {what}" + (f": {tail}" if tail else ""), status=proc.returncode
        )

    async def close(self) -> None:
        return None


async def _talk(proc: asyncio.subprocess.Process, payload: bytes) -> bytes:
    """Give the program the event and collect its stderr. A program that exits without
    reading its input (/bin/false, a failing check) is its exit status, not our error:
    writing to its closed stdin raises BrokenPipeError, or RuntimeError under uvloop."""
    stdin, errors = proc.stdin, proc.stderr
    if stdin is None or errors is None:  # both are pipes (PIPE above)
        raise RuntimeError("program started without pipes")

    async def feed() -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
            stdin.write(payload)
            await stdin.drain()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
            stdin.close()

    _, stderr = await asyncio.gather(feed(), errors.read())
    await proc.wait()
    return stderr
