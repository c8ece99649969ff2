"""What the delivery stages are told (from the settings) and what they count."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from csnotify.config import Settings

DEFAULT_SCHEDULE = (0.0, 5.0, 30.0, 120.0, 600.0, 3600.0)


@dataclass(frozen=True)
class DeliverySettings:
    timeout: float = 10.0
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE  # wait before each attempt
    max_age: float = 86400.0  # seconds after acceptance a delivery is given up
    per_endpoint: int = 16  # attempts in flight to one endpoint
    max_backlog: int = 100_000  # pending deliveries kept per endpoint
    concurrency: int = 64  # attempts in flight in all
    disable_after: int = 10
    notify: str = ""
    log_max: int = 100
    human_max_per_minute: int = 10
    command_env: tuple[str, ...] = ()  # variables cmd: programs get besides the basic ones
    allow_networks: tuple[Any, ...] = ()  # private nets API-made subscriptions may reach
    environ: Mapping[str, str] = field(default_factory=dict)  # cmd: programs' variables

    @classmethod
    def from_settings(cls, s: Settings) -> DeliverySettings:
        from csnotify.channels import env_names
        from csnotify.events import parse_duration, parse_schedule
        from csnotify.policy import parse_networks

        return cls(
            timeout=s["delivery.timeout"],
            schedule=tuple(parse_schedule(s["delivery.retry_schedule"], "delivery.retry_schedule")),
            max_age=parse_duration(s["delivery.max_age"], "delivery.max_age").total_seconds(),
            per_endpoint=s["delivery.per_endpoint"],
            max_backlog=s["delivery.max_backlog"],
            concurrency=s["delivery.concurrency"],
            disable_after=s["failures.disable_after"],
            notify=s["failures.notify"],
            log_max=s["log.max_per_endpoint"],
            human_max_per_minute=s["delivery.human_max_per_minute"],
            command_env=env_names(s["delivery.command_env"]),
            allow_networks=parse_networks(s["api.allow_networks"]),
            environ=s.environ,
        )


@dataclass
class Stats:
    events: int = 0
    matched: int = 0  # events that reached at least one endpoint
    delivered: int = 0
    failed: int = 0  # deliveries given up after their attempts
    retried: int = 0  # attempts that failed and were scheduled again
    dropped: int = 0  # deliveries given up unsent (full backlog, too old, endpoint gone)
    muted: int = 0
    folded: int = 0  # events folded into a digest or group message
    switched_off: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "matched": self.matched,
            "delivered": self.delivered,
            "failed": self.failed,
            "retried": self.retried,
            "dropped": self.dropped,
            "muted": self.muted,
            "folded": self.folded,
            "switched_off": list(self.switched_off),
        }
