"""JSON lines on standard input, until end of input; bad lines are reported and skipped."""

from __future__ import annotations

import asyncio
from typing import IO, TYPE_CHECKING

from csnotify.errors import BadInput
from csnotify.events import loads, normalise

if TYPE_CHECKING:
    from csnotify.listen import Listener
    from csnotify.subscriptions import Subscription


class StdinSource:
    name = "stdin"

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    async def subscriptions_changed(self, subscriptions: list[Subscription]) -> None:
        return None

    async def run(self, listener: Listener) -> None:
        number = 0
        while not listener.stop.is_set():
            line = await asyncio.to_thread(self.stream.readline)
            if not line:
                return
            number += 1
            if not line.strip():
                continue
            try:
                events = normalise(loads(line), source="stdin")
            except BadInput as exc:
                listener.reject(f"line {number}", exc.message)
                continue
            for event in events:
                await listener.handle(event)
