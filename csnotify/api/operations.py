"""One function per operation of the API, called by both of its front ends: the JSON
routes under ``/v1`` (server.py) and the CloudStack-style commands at ``/client/api``
(commands.py). Each takes the caller and plain values, calls the core function its CLI
command calls and returns plain data in the shapes ``show --json`` prints; what the core
refuses comes back as the ``CsnotifyError`` the CLI would print."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from csnotify import aio, subscriptions
from csnotify.api import bodies
from csnotify.policy import Policy

if TYPE_CHECKING:
    from csnotify.config import Settings
    from csnotify.models import Subscription
    from csnotify.store import Store
    from csnotify.tokens import Caller

MAX_LIMIT = 10_000


class Service:
    """What the operations work on: the store, whose one connection is used in a worker
    thread one call at a time (``aio.locked_thread``, so that the event loop keeps
    answering meanwhile), the settings and the policy for tenants' subscriptions."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.policy = Policy.from_settings(settings)
        self.lock = asyncio.Lock()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A core call on the store, in the store's thread."""
        return await aio.locked_thread(self.lock, fn, *args)


def _bound(api: Service, caller: Caller) -> Policy | None:
    """The policy for this caller's subscriptions; a global caller is an operator."""
    return None if caller.scope == "global" else api.policy


async def _doc(api: Service, sub: Subscription) -> dict[str, Any]:
    from csnotify.status import subscription_docs

    (data,) = await api.run(subscription_docs, api.store, [sub])
    return data  # type: ignore[no-any-return]


async def _written(api: Service, sub: Subscription, generated_key: str | None) -> dict[str, Any]:
    """A created or changed subscription, with the key generated for it (shown once) and
    what the CLI says as notes after subscribe (a setting that does nothing here, filters
    the bus cannot match without API keys)."""
    data = await _doc(api, sub)
    if generated_key:
        data["generated_key"] = generated_key
    keys = bool(api.settings["cloudstack.api_key"] and api.settings["cloudstack.secret_key"])
    if said := subscriptions.notes(sub, keys):
        data["notes"] = said
    return data


async def list_subscriptions(api: Service, caller: Caller) -> list[dict[str, Any]]:
    from csnotify.status import subscription_docs

    def docs() -> list[dict[str, Any]]:
        return subscription_docs(api.store, subscriptions.visible(api.store, caller.sees))

    return await api.run(docs)  # type: ignore[no-any-return]


async def create(api: Service, caller: Caller, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc``: the fields of ``bodies.CREATE_FIELDS``, in their JSON shapes."""
    bodies.checked(doc, bodies.CREATE_FIELDS)
    created = await api.run(
        lambda: subscriptions.subscribe(
            api.store,
            bodies.subscription_input(doc),
            enabled=doc.get("enabled", True),
            owner=caller.owner(),
            policy=_bound(api, caller),
        )
    )
    return await _written(api, created.subscription, created.generated_key)


async def show(api: Service, caller: Caller, name: str) -> dict[str, Any]:
    return await _doc(api, await api.run(subscriptions.find, api.store, name, caller.sees))


async def update(api: Service, caller: Caller, name: str, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc``: the fields of ``bodies.UPDATE_FIELDS`` to change; ``"key": None`` stops
    signing, ``"name"`` renames."""
    bodies.checked(doc, bodies.UPDATE_FIELDS, nullable=("key",))
    no_key = "key" in doc and doc["key"] is None
    spec = bodies.subscription_input({k: v for k, v in doc.items() if v is not None})
    result = await api.run(
        lambda: subscriptions.update(
            api.store, name, spec, no_key=no_key, policy=_bound(api, caller), within=caller.sees
        )
    )
    return await _written(api, result.subscription, result.generated_key)


async def delete(api: Service, caller: Caller, name: str) -> None:
    await api.run(lambda: subscriptions.unsubscribe(api.store, name, within=caller.sees))


async def set_enabled(api: Service, caller: Caller, name: str, enabled: bool) -> dict[str, Any]:
    sub = await api.run(
        lambda: subscriptions.set_enabled(api.store, name, enabled, within=caller.sees)
    )
    return await _doc(api, sub)


async def test(api: Service, caller: Caller, name: str) -> list[dict[str, Any]]:
    from csnotify.delivery.settings import DeliverySettings
    from csnotify.dispatch import test_endpoints

    sub = await api.run(subscriptions.find, api.store, name, caller.sees)
    results = await test_endpoints(sub, DeliverySettings.from_settings(api.settings))
    return [r.as_json() for r in results]


async def deliveries(
    api: Service, caller: Caller, name: str | None, failed: bool, limit: int
) -> list[dict[str, Any]]:
    """The delivery log, newest first: one subscription's, or all the caller sees."""
    from csnotify.store import DeliveryLog

    if not 1 <= limit <= MAX_LIMIT:
        raise bodies.Malformed(f"'limit' must be a whole number from 1 to {MAX_LIMIT}")

    def rows() -> list[dict[str, Any]]:
        log_ = DeliveryLog(api.store)
        if name is not None:
            subscriptions.find(api.store, name, caller.sees)
            return log_.rows(name, failed, limit)
        if caller.scope == "global":
            return log_.rows(None, failed, limit)
        found = [
            r for s in subscriptions.visible(api.store, caller.sees)
            for r in log_.rows(s.name, failed, limit)
        ]  # fmt: skip
        return sorted(found, key=lambda r: r["at"], reverse=True)[:limit]

    return await api.run(rows)  # type: ignore[no-any-return]


def event_types(match: str | None) -> list[str]:
    from csnotify.reach import catalog

    return catalog(match)


async def match(
    api: Service, caller: Caller, event_type: str | None, level: str | None, where: list[str]
) -> dict[str, Any]:
    """The event ``match TYPE`` describes, and each visible subscription's verdict on it."""
    from csnotify import reach

    event = reach.typed_event(event_type, "INFO" if level is None else level, where)

    def verdicts() -> list[dict[str, Any]]:
        subs = subscriptions.visible(api.store, caller.sees)
        return reach.verdicts(api.store, event, subs)

    return {"event": event.fields(), "subscriptions": await api.run(verdicts)}


def whole(value: str | None, what: str, default: int) -> int:
    """A whole number given as text (a query parameter), or the default when not given."""
    if value is None:
        return default
    if not value.isdigit():
        raise bodies.Malformed(f"{what} must be a whole number from 1 to {MAX_LIMIT}")
    return int(value)


def flag(value: str | None, what: str) -> bool:
    """true/false (also 1/0, any case) given as text; not given is false."""
    text = (value or "false").lower()
    if text not in ("true", "false", "1", "0"):
        raise bodies.Malformed(f"{what} must be true or false")
    return text in ("true", "1")
