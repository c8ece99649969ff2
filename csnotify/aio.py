"""Running the async commands: on uvloop when it is installed (it roughly halves the event
loop's own cost per delivery, see bench/), on asyncio's loop otherwise."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def locked_thread(lock: asyncio.Lock, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread while holding ``lock``. Cancelling the caller does
    not release the lock before the thread is done: the store has one connection, and a
    transaction still running in a thread must not overlap the next one."""
    async with lock:
        future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait({future})
            raise
