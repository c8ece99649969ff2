"""Where events come from: CloudStack's API (api), its RabbitMQ event bus (amqp), or
JSON lines on standard input (stdin). Each feeds ``Listener.handle``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("csnotify")

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0


@dataclass
class Outage:
    """Backoff and log lines for a source that cannot reach its server: one warning when
    an outage starts, one line when it ends, growing waits in between."""

    what: str
    delay: float = BACKOFF_START_S
    down: bool = False

    def failed(self, reason: str) -> float:
        if not self.down:
            log.warning("%s unreachable: %s; retrying with backoff", self.what, reason)
            self.down = True
        wait = self.delay
        self.delay = min(self.delay * 2, BACKOFF_MAX_S)
        return wait

    def ok(self) -> None:
        if self.down:
            log.warning("%s reachable again", self.what)
        self.down = False
        self.delay = BACKOFF_START_S
