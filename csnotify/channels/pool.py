"""The channels one run uses: one per endpoint kind, made on first use (so Apprise is
imported only when an Apprise endpoint is delivered to)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from csnotify.channels.base import Channel
from csnotify.models import APPRISE, COMMAND, endpoint_kind

if TYPE_CHECKING:
    from csnotify.policy import Network


class ChannelPool:
    def __init__(
        self,
        concurrency: int,
        command_env: tuple[str, ...] = (),
        allow_networks: tuple[Network, ...] = (),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """``environ``: where cmd: programs get their variables from (the environment the
        settings were read with; none: nothing beyond what CommandChannel always sets)."""
        self.concurrency = concurrency
        self.command_env = command_env
        self.environ: Mapping[str, str] = {} if environ is None else environ
        self.allow_networks = allow_networks  # for API-made subscriptions (channels/guard.py)
        self._made: dict[str, Channel] = {}

    def get(self, uri: str) -> Channel:
        kind = endpoint_kind(uri)
        if kind not in self._made:
            from csnotify.channels.guard import Guarded

            self._made[kind] = Guarded(self._make(kind), self.allow_networks)
        return self._made[kind]

    def _make(self, kind: str) -> Channel:
        if kind == COMMAND:
            from csnotify.channels.command import CommandChannel

            return CommandChannel(self.environ, self.command_env)
        if kind == APPRISE:
            from csnotify.channels.apprise import AppriseChannel

            return AppriseChannel(workers=min(32, self.concurrency))
        from csnotify.channels.http import Client
        from csnotify.channels.webhook import BODY_CAP, WebhookChannel

        return WebhookChannel(Client(limit=self.concurrency, cap=BODY_CAP))

    async def close(self) -> None:
        for channel in self._made.values():
            await channel.close()
        self._made.clear()
