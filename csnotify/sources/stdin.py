"""JSON lines on standard input, until end of input; bad lines are reported and skipped."""

from __future__ import annotations

import asyncio
import codecs
import io
import os
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError
from typing import IO, TYPE_CHECKING

from csnotify.errors import BadInput
from csnotify.events import loads, normalise

if TYPE_CHECKING:
    from csnotify.listen import Listener
    from csnotify.models import Subscription


class StdinSource:
    name = "stdin"

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    async def subscriptions_changed(self, subscriptions: list[Subscription]) -> None:
        return None

    async def run(self, listener: Listener) -> None:
        lines = self._reader()
        stop = asyncio.ensure_future(listener.stop.wait())
        number = 0
        try:
            while not listener.stop.is_set():
                read = asyncio.ensure_future(lines.get())
                await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not read.done():  # told to stop while waiting for input
                    read.cancel()
                    return
                line = read.result()
                if not line:
                    return
                number += 1
                if not line.strip():
                    continue
                try:
                    events = normalise(loads(line), source="stdin", checked=True)
                except BadInput as exc:
                    listener.reject(f"line {number}", exc.message)
                    continue
                for event in events:
                    await listener.handle(event)
        finally:
            stop.cancel()

    def _reader(self) -> asyncio.Queue[str]:
        """Lines read by a daemon thread, so that a stop (SIGTERM) need not wait for input
        that may never come; '' marks the end of input. A pipe or terminal is read with
        os.read on its descriptor: a thread blocked inside the buffered stdin object would
        make the interpreter abort at exit."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue(maxsize=1000)

        def put(line: str) -> None:
            waiting = lines.put(line)
            try:
                asyncio.run_coroutine_threadsafe(waiting, loop).result()
            except BaseException:
                waiting.close()  # the loop is gone: never started, and no warning that it was not
                raise

        fd = _pipe_fd(self.stream)
        source = _fd_lines(fd) if fd is not None else iter(self.stream.readline, "")

        def read() -> None:
            try:
                for line in source:
                    put(line)
                put("")
            except (RuntimeError, OSError, ValueError, CancelledError):  # loop or stream gone
                return

        threading.Thread(target=read, name="stdin", daemon=True).start()
        return lines


def _pipe_fd(stream: IO[str]) -> int | None:
    """The descriptor behind ``stream`` if it is a pipe, socket or terminal."""
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None
    return fd if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode) else None


def _fd_lines(fd: int) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    while chunk := os.read(fd, 65536):
        pending += decoder.decode(chunk)
        *complete, pending = pending.split("\n")
        for line in complete:
            yield line + "\n"
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending
