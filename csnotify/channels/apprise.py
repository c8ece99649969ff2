"""Every Apprise service (mailto://, smseagle://, ntfy://, slack://, ...).

Apprise is synchronous; each notification runs in a worker thread, one Apprise object per
endpoint URI. Apprise reports problems through logging only, so its warnings are
collected per thread and the last one becomes the recorded error.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from csnotify.channels.base import Attempt, Message
from csnotify.channels.human import render_message
from csnotify.redact import mask_uri


class AppriseWarnings(logging.Handler):
    """Keeps Apprise's warnings for the thread that logged them (between ``start`` and
    ``take``), and off our stderr while attached."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.local = threading.local()
        self._propagate = True

    def attach(self) -> None:
        logger = logging.getLogger("apprise")
        self._propagate = logger.propagate
        logger.addHandler(self)
        logger.propagate = False

    def detach(self) -> None:
        logger = logging.getLogger("apprise")
        logger.removeHandler(self)
        logger.propagate = self._propagate

    def start(self) -> None:
        self.local.messages = []

    def take(self) -> list[str]:
        messages: list[str] = getattr(self.local, "messages", [])
        self.local.messages = None
        return messages

    def emit(self, record: logging.LogRecord) -> None:
        messages = getattr(self.local, "messages", None)
        if messages is not None:
            messages.append(record.getMessage())


class AppriseChannel:
    def __init__(self, workers: int = 16) -> None:
        import apprise

        self._apprise = apprise
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="apprise")
        self._objects: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._log = AppriseWarnings()
        self._log.attach()  # Apprise's own log lines stay out of ours; errors are recorded

    def _object(self, uri: str) -> Any:
        with self._lock:
            obj = self._objects.get(uri)
            if obj is None:
                obj = self._apprise.Apprise()
                obj.add(uri)
                self._objects[uri] = obj
            return obj

    def _notify(self, uri: str, title: str, body: str) -> Attempt:
        self._log.start()
        try:
            obj = self._object(uri)
            if len(obj) == 0:
                return Attempt.failed("Apprise cannot use this URI", retryable=False)
            # Our text is plain text: Apprise escapes it for each service's markup (HTML
            # email, Markdown chat, titles included) and keeps its line breaks.
            ok = obj.notify(title=title, body=body, body_format=self._apprise.NotifyFormat.TEXT)
        except Exception as exc:  # noqa: BLE001 - a plugin bug must not kill the worker
            self._log.take()
            return Attempt.failed(f"{type(exc).__name__}: {exc}")
        messages = self._log.take()
        if ok:
            return Attempt(ok=True)
        reason = messages[-1] if messages else "Apprise reported a failed notification"
        return Attempt.failed(reason.replace(uri, mask_uri(uri)))

    async def send(self, message: Message, timeout: float) -> Attempt:
        title, body = render_message(message)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, self._notify, message.uri, title, body)
        try:
            # Apprise applies its own network timeouts; this bounds a plugin that hangs.
            return await asyncio.wait_for(future, timeout=timeout + 5)
        except TimeoutError:
            return Attempt.failed(f"timed out after {timeout + 5:g} s")

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._log.detach()
