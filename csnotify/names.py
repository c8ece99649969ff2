"""Names for the UUIDs the event bus carries, read through CloudStack's API.

CloudStack's bus messages name the user, account, project and resource by UUID only
(ActionEventUtils.publishOnEventBus, ApiServer.handleAsyncJobPublishEvent,
UsageEventUtils). With API keys configured, ``Names`` resolves them before matching, so
``--where account=web`` and templates with ``{resource_name}`` work on the bus source
as on the api source:

- ``listUsers`` gives the username, account and domain of the acting user (one call for
  all three); ``listAccounts`` the account and domain when there is no user;
  ``listDomains`` a domain's name; ``listProjects`` the project's name and domain (a
  project's events are named as listEvents names them: project, no account); the resource type's
  own list command (``listVirtualMachines``, ``listVolumes``, ...) the resource's name.
  Each is called with ``id=UUID`` and ``listall=true``.
- Events from ``listEvents`` name the owner's account (with its domain's UUID) and the
  acting user but give neither one's UUID (EventResponse), which ``--format cloudstack``
  needs (the body's ``account`` and ``user``, ``User-Agent: CS-Hookshot/<account uuid>``).
  ``listAccounts`` by ``name`` and ``domainid`` gives the account's (one account of a name
  in a domain), ``listUsers`` by ``username`` with ``listall=true`` the user's, taken only
  when exactly one user the keys can see has that username: the acting user may belong to
  another domain than the event's owner (an admin acting for a tenant), so a search within
  the owner's domain could name a namesake.
- Answers are kept in memory and in the store for ``cloudstack.names_ttl``; a UUID the
  API does not know (a deleted resource) is kept as unknown for a tenth of that.
- At most ``cloudstack.lookups_in_flight`` look-ups run at once, and one UUID is asked
  once however many events name it meanwhile.
- An event waits at most ``cloudstack.lookup_timeout`` for its names; then it goes on
  unenriched (the look-up carries on and serves the next events). While the API cannot
  be reached, events do not wait at all: look-ups pause with a growing backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from csnotify.cloudstack import ApiRefused, ApiUnavailable

if TYPE_CHECKING:
    from csnotify.cloudstack import CloudStackClient
    from csnotify.events import Event

log = logging.getLogger("csnotify")

# kind -> (list command, item key of its response, extra parameters). Resource kinds are
# CloudStack's entity names as ActionEvents carry them (``entity``) and async jobs
# (``instanceType``).
COMMANDS: dict[str, tuple[str, str, dict[str, str]]] = {
    "user": ("listUsers", "user", {}),
    "account": ("listAccounts", "account", {}),
    "domain": ("listDomains", "domain", {}),
    "project": ("listProjects", "project", {}),
    "VirtualMachine": ("listVirtualMachines", "virtualmachine", {}),
    "Volume": ("listVolumes", "volume", {}),
    "Network": ("listNetworks", "network", {}),
    "Snapshot": ("listSnapshots", "snapshot", {}),
    "Template": ("listTemplates", "template", {"templatefilter": "all"}),
    "Iso": ("listIsos", "iso", {"isofilter": "all"}),
    "Vpc": ("listVPCs", "vpc", {}),
    "Host": ("listHosts", "host", {}),
    "IpAddress": ("listPublicIpAddresses", "publicipaddress", {}),
    "SecurityGroup": ("listSecurityGroups", "securitygroup", {}),
    "KubernetesCluster": ("listKubernetesClusters", "kubernetescluster", {}),
}
# Look-ups by name, for listEvents rows (kind -> command, item key); the key's value is
# "<domain UUID>/<account name>" for an account, the username for a user.
ACCOUNT_BY_NAME = "account-by-name"
USER_BY_NAME = "user-by-name"
# Fields of an answer worth keeping (answers are otherwise large).
KEPT = (
    "id", "name", "username", "displayname", "account", "accountid", "domain", "domainid", "path",
)  # fmt: skip
# What an answer names: event field <- answer key, per kind of look-up.
COPIED = {
    "user": (("username", "username"), ("account", "account"), ("account_id", "accountid"),
             ("domain", "domain"), ("domain_id", "domainid")),
    "account": (("account", "name"), ("domain", "domain"), ("domain_id", "domainid")),
    "project": (("project", "name"),),
}  # fmt: skip
# A project's events: the bus's "account" is the project's own account (a UUID listAccounts
# never lists), so the owner is named as listEvents names it (ViewResponseHelper.
# populateOwner: a project account gives the project's name and no account name), with
# the project's domain; the acting user gives only the username.
COPIED_IN_PROJECT = {
    "user": (("username", "username"),),
    "account": (),
    "project": (("project", "name"), ("domain", "domain"), ("domain_id", "domainid")),
}  # fmt: skip
NOT_FOUND_HINTS = ("entity does not exist", "unable to find", "does not exist")
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
Key = tuple[str, str]


@dataclass
class Entry:
    doc: dict[str, Any] | None  # None: the API knows no such UUID
    fetched: float


@dataclass
class LookupStats:
    calls: int = 0  # API requests made
    hits: int = 0  # answered from memory
    timeouts: int = 0  # events that went on before their names came
    failures: int = 0


@dataclass
class Names:
    client: CloudStackClient
    ttl: float = 3600.0
    in_flight: int = 4
    timeout: float = 2.0
    save: (
        Callable[[list[tuple[str, str, dict[str, Any] | None, float]]], Awaitable[None]] | None
    ) = None
    clock: Callable[[], float] = time.time
    stats: LookupStats = field(default_factory=LookupStats)

    def __post_init__(self) -> None:
        self.cache: dict[Key, Entry] = {}
        self.pending: dict[Key, asyncio.Future[dict[str, Any] | None]] = {}
        # look-ups an event already gave up waiting for: later events do not wait for them
        self.overdue: set[Key] = set()
        self.slots = asyncio.Semaphore(self.in_flight)
        self.paused_until = 0.0
        self.backoff = BACKOFF_START_S
        self.refused: set[str] = set()  # commands the API will not run for these keys
        self._unsaved: list[tuple[str, str, dict[str, Any] | None, float]] = []
        self._saving: asyncio.Task[None] | None = None

    # -- the cache ---------------------------------------------------------------------

    def restore(self, rows: list[tuple[str, str, dict[str, Any] | None, float]]) -> None:
        """Answers kept in the store by an earlier run."""
        for kind, uuid, doc, fetched in rows:
            self.cache[(kind, uuid)] = Entry(doc, fetched)

    def cached(self, key: Key) -> Entry | None:
        entry = self.cache.get(key)
        if entry is None:
            return None
        life = self.ttl if entry.doc is not None else self.ttl / 10
        return entry if self.clock() - entry.fetched < life else None

    # -- look-ups ------------------------------------------------------------------------

    def wanted(self, event: Event) -> list[Key]:
        """The look-ups that would name what the event leaves unnamed (for an event from
        listEvents: the UUIDs of its account and user)."""
        if event.source == "api":
            return by_name_keys(event)
        keys: list[Key] = []
        if event.user_id and not event.username:
            keys.append(("user", event.user_id))
        elif event.account_id and not event.account and not event.project_id:
            keys.append(("account", event.account_id))
        if event.project_id and not event.project:
            keys.append(("project", event.project_id))
        if event.domain_id and event.domain_path is None and not event.raw.get("domainpath"):
            keys.append(("domain", event.domain_id))  # its path: owners' scope takes subdomains
        if (
            event.resource_id
            and not event.resource_name
            and event.resource_type in COMMANDS
            and event.resource_type not in ("user", "account", "domain", "project")
        ):
            keys.append((event.resource_type, event.resource_id))
        return keys

    def start(self, event: Event) -> dict[Key, asyncio.Future[dict[str, Any] | None]]:
        """Start the look-ups the event needs that are not cached; returns those worth
        waiting for (none when everything is known, the API is paused, or a look-up is
        already overdue for an earlier event)."""
        waits = {}
        for key in self.wanted(event):
            if self.cached(key) is not None:
                continue
            future = self._lookup(key)
            if future is not None and key not in self.overdue:
                waits[key] = future
        return waits

    async def enrich(self, event: Event, deadline: float | None = None) -> None:
        """Set the names the cache or the API gives within ``cloudstack.lookup_timeout``
        (or until ``deadline``, a loop time)."""
        loop = asyncio.get_running_loop()
        end = deadline if deadline is not None else loop.time() + self.timeout
        waits = self.start(event)
        if not waits:
            self.stats.hits += 1
        for _round in range(2):  # the account's answer names its domain, asked for next
            if waits:
                if end - loop.time() > 0:
                    await asyncio.wait(waits.values(), timeout=end - loop.time())
                late = {key for key, future in waits.items() if not future.done()}
                if late:
                    self.stats.timeouts += 1
                    self.overdue |= late
            self.apply(event)
            waits = self.start(event)

    def apply(self, event: Event) -> None:
        """Copy what the cache knows onto the event (never over what it has)."""
        if event.source == "api":
            self._apply_ids(event)
            return
        changed = False
        copied = COPIED_IN_PROJECT if event.project_id else COPIED
        for kind, uuid in (
            ("user", event.user_id), ("account", event.account_id), ("project", event.project_id),
        ):  # fmt: skip
            doc = self._doc((kind, uuid)) if uuid else None
            for field_name, key in copied[kind] if doc else ():
                if not getattr(event, field_name) and doc.get(key):
                    setattr(event, field_name, doc[key])
                    changed = True
        domain = self._doc(("domain", event.domain_id)) if event.domain_id else None
        if domain:
            if not event.domain and domain.get("name"):
                event.domain = domain["name"]
                changed = True
            if event.domain_path is None and domain.get("path"):
                event.domain_path = domain["path"]
        if event.resource_id and not event.resource_name and event.resource_type:
            res = self._doc((event.resource_type, event.resource_id))
            if res:
                event.resource_name = res.get("name") or res.get("displayname")
                changed = True
        if changed:
            event.changed()

    def _apply_ids(self, event: Event) -> None:
        """An event from listEvents: the UUIDs of its account and acting user."""
        changed = False
        for key in by_name_keys(event):
            doc = self._doc(key)  # checked again: the store may compare keys without case
            uuid = doc["id"] if doc and pick(key, [doc]) is doc else None
            if uuid is None:
                continue
            if key[0] == ACCOUNT_BY_NAME and not event.account_id:
                event.account_id = uuid
                changed = True
            elif key[0] == USER_BY_NAME and not event.user_id:
                event.user_id = uuid
                changed = True
        if changed:
            event.changed()

    def _doc(self, key: Key) -> dict[str, Any] | None:
        entry = self.cache.get(key)  # an expired answer still names (it is being renewed)
        return entry.doc if entry is not None else None

    def _lookup(self, key: Key) -> asyncio.Future[dict[str, Any] | None] | None:
        if key in self.pending:
            return self.pending[key]
        if self.clock() < self.paused_until or request(key)[0] in self.refused:
            return None
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self.pending[key] = future
        task = asyncio.ensure_future(self._ask(key, future))
        task.add_done_callback(lambda _t: None)
        return future

    async def _ask(self, key: Key, future: asyncio.Future[dict[str, Any] | None]) -> None:
        kind, uuid = key
        command, item_key, params = request(key)
        doc: dict[str, Any] | None = None
        try:
            async with self.slots:
                if self.clock() < self.paused_until:
                    return
                self.stats.calls += 1
                try:
                    answer = await self.client.call(command, **params)
                except ApiRefused as exc:
                    if not any(h in str(exc).lower() for h in NOT_FOUND_HINTS):
                        raise
                    answer = {}  # ParamProcessWorker: an unknown UUID is a 431
            items = answer.get(item_key)
            found = pick(key, items if isinstance(items, list) else [])
            doc = {k: found[k] for k in KEPT if k in found} if found is not None else None
            self._keep(key, doc)
            self._reachable()
        except ApiUnavailable as exc:
            self.stats.failures += 1
            self._unreachable(str(exc))
        except ApiRefused as exc:
            self.stats.failures += 1
            self.refused.add(command)
            log.error(  # noqa: TRY400 - a refusal, said in one line, no traceback
                "cannot resolve names with %s: %s; events go out without them", command, exc
            )
        except Exception:  # a look-up must never stop an event
            self.stats.failures += 1
            log.exception("looking up %s %s failed", kind, uuid)
        finally:
            self.pending.pop(key, None)
            self.overdue.discard(key)
            if not future.done():
                future.set_result(doc)

    def _keep(self, key: Key, doc: dict[str, Any] | None) -> None:
        now = self.clock()
        self.cache[key] = Entry(doc, now)
        if self.save is not None:
            self._unsaved.append((key[0], key[1], doc, now))
            if self._saving is None or self._saving.done():
                self._saving = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0.2)  # gather a burst's answers into one write
        rows, self._unsaved = self._unsaved, []
        if rows and self.save is not None:
            try:
                await self.save(rows)
            except Exception:
                log.exception("could not keep %d resolved names in the store", len(rows))

    async def close(self) -> None:
        if self._saving is not None:
            await asyncio.gather(self._saving, return_exceptions=True)
        if self._unsaved and self.save is not None:
            await self._flush()

    def _unreachable(self, reason: str) -> None:
        if self.paused_until == 0.0:
            log.warning(
                "names cannot be resolved (%s); events go out without them until the API answers",
                reason,
            )
        self.paused_until = self.clock() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)

    def _reachable(self) -> None:
        if self.paused_until:
            log.warning("the CloudStack API answers again; names are resolved")
        self.paused_until = 0.0
        self.backoff = BACKOFF_START_S


def by_name_keys(event: Event) -> list[Key]:
    """The look-ups that give an event from listEvents its account's and user's UUIDs. A
    project's event names no account (ViewResponseHelper.populateOwner: the project's
    own account, which listAccounts never lists), so only its user is looked up."""
    keys: list[Key] = []
    if event.account and event.domain_id and not event.account_id and not event.project_id:
        keys.append((ACCOUNT_BY_NAME, f"{event.domain_id}/{event.account}"))
    if event.username and not event.user_id:
        keys.append((USER_BY_NAME, event.username))
    return keys


def request(key: Key) -> tuple[str, str, dict[str, str]]:
    """The list command, the item key of its answer and the parameters of a look-up.

    - by UUID: ``id`` and ``listall=true``;
    - an account by name: ``name`` and ``domainid``, without ``listall``: an admin's
      ``listall`` makes the search recursive, and a namesake in a subdomain would come
      along (QueryManagerImpl.searchForAccountsInternal);
    - a user by username: ``username`` and ``listall=true``, every user the keys can see
      (QueryManagerImpl.getUserListInternal; without ``listall`` an admin sees only the
      users of its own account, AccountManagerImpl.buildACLSearchParameters)."""
    kind, value = key
    if kind == ACCOUNT_BY_NAME:
        domain_id, _, name = value.partition("/")
        return "listAccounts", "account", {"name": name, "domainid": domain_id}
    if kind == USER_BY_NAME:
        return "listUsers", "user", {"username": value, "listall": "true"}
    command, item_key, extra = COMMANDS[kind]
    return command, item_key, {"id": value, "listall": "true", **extra}


def pick(key: Key, items: list[Any]) -> dict[str, Any] | None:
    """The item that answers the look-up: the first by UUID; by name, the one item of
    exactly that name (and domain), or none. CloudStack compares names without case (the
    database's collation) and a username as a LIKE pattern (``_`` and ``%`` match
    anything), so an answer may hold namesakes; two users of one username leave the user
    unnamed."""
    found = [i for i in items if isinstance(i, dict)]
    kind, value = key
    if kind == ACCOUNT_BY_NAME:
        domain_id, _, name = value.partition("/")
        found = [i for i in found if i.get("name") == name and i.get("domainid") == domain_id]
    elif kind == USER_BY_NAME:
        found = [i for i in found if i.get("username") == value]
    else:
        return found[0] if found else None
    return found[0] if len(found) == 1 and isinstance(found[0].get("id"), str) else None


# Filters that test names: on the bus they match only once names are resolved.
NAME_FIELDS = ("account", "domain", "username", "project", "resource_name")


def uses_names(subscription: Any) -> bool:
    return any(f.field in NAME_FIELDS for f in subscription.filters)


def names_hint(subscriptions: list[Any]) -> str | None:
    """What to tell an operator whose name filters cannot match bus events (no API keys)."""
    named = [s.name for s in subscriptions if s.enabled and uses_names(s)]
    if not named:
        return None
    return (
        f"bus events carry UUIDs, not names: the name filters of {', '.join(named[:5])}"
        f"{' ...' if len(named) > 5 else ''} match them only with API keys to resolve names"
        " (set cloudstack.api_key and cloudstack.secret_key, or use --where account_id=UUID)"
    )


def from_settings(settings: Any, timeout: float | None = None) -> Names | None:
    """A resolver with the configured keys, or None when there are none."""
    from csnotify.cloudstack import CloudStackClient, Credentials
    from csnotify.errors import BadInput
    from csnotify.events import parse_duration

    if not settings["cloudstack.api_key"] or not settings["cloudstack.secret_key"]:
        return None
    try:
        creds = Credentials.from_settings(settings)
    except BadInput:
        return None
    wait = settings["cloudstack.lookup_timeout"] if timeout is None else timeout
    client = CloudStackClient(creds, timeout=max(5.0, wait))
    return Names(
        client,
        ttl=parse_duration(
            settings["cloudstack.names_ttl"], "cloudstack.names_ttl"
        ).total_seconds(),
        in_flight=settings["cloudstack.lookups_in_flight"],
        timeout=wait,
    )


async def resolve(settings: Any, events: list[Event]) -> None:
    """Names for a few events now (``match``): cache-less, bounded by the timeout."""
    names = from_settings(settings)
    if names is None:
        return
    try:
        for event in events:
            if event.source == "amqp":
                await names.enrich(event)
    finally:
        await names.client.close()
