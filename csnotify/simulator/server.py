"""The simulator's HTTP API at /client/api: listEvents, listCapabilities, listApis, and the
list commands that name what the event bus gives by UUID (listUsers, listAccounts,
listDomains, listProjects, listVirtualMachines, listVolumes, listNetworks,
listSnapshots), with requests verified the way CloudStack's ApiServer verifies them."""

from __future__ import annotations

import hmac
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any

from csnotify.signing import api_signature

if TYPE_CHECKING:
    from aiohttp import web

VERSION = "4.20.0.0"
AUTH_ERROR = "unable to verify user credentials and/or request signature"


@dataclass
class EventLog:
    """listEvents rows, oldest first (the order they were made: CloudStack's DB id)."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)


# list command -> (kind in the directory, item key of the response); the answer wraps
# them as CloudStack does: {"listvirtualmachinesresponse": {"count": 1, "virtualmachine": [..]}}
LIST_COMMANDS = {
    "listUsers": ("user", "user"),
    "listAccounts": ("account", "account"),
    "listDomains": ("domain", "domain"),
    "listProjects": ("project", "project"),
    "listVirtualMachines": ("VirtualMachine", "virtualmachine"),
    "listVolumes": ("Volume", "volume"),
    "listNetworks": ("Network", "network"),
    "listSnapshots": ("Snapshot", "snapshot"),
}


# Tenants of the simulated cloud, with API keys of their own (for csnotify serve's
# CloudStack-signed requests): (user id, account id, name, domain path, account type,
# api key, secret key). Account types as com.cloud.user.Account.Type: 0 normal user,
# 1 root admin, 2 domain admin.
TENANT_DOMAINS = (
    ("7a1d0c2e-0001-4c00-8000-00000000d001", "ROOT/customers"),
    ("7a1d0c2e-0002-4c00-8000-00000000d002", "ROOT/customers/eu"),
    ("7a1d0c2e-0003-4c00-8000-00000000d003", "ROOT/partners"),
)
TENANTS = (
    ("7a1d0c2e-0000-4c00-8000-0000000a0001", "7a1d0c2e-0000-4c00-8000-0000000c0001", "acme",
     "ROOT/customers", 0, "acme-api-key", "acme-secret-key"),
    ("7a1d0c2e-0000-4c00-8000-0000000a0002", "7a1d0c2e-0000-4c00-8000-0000000c0002", "globex",
     "ROOT/customers", 0, "globex-api-key", "globex-secret-key"),
    ("7a1d0c2e-0000-4c00-8000-0000000a0003", "7a1d0c2e-0000-4c00-8000-0000000c0003", "initech",
     "ROOT/partners", 0, "initech-api-key", "initech-secret-key"),
    ("7a1d0c2e-0000-4c00-8000-0000000a0004", "7a1d0c2e-0000-4c00-8000-0000000c0004",
     "custadmin", "ROOT/customers", 2, "custadmin-api-key", "custadmin-secret-key"),
    ("7a1d0c2e-0000-4c00-8000-0000000a0005", "7a1d0c2e-0000-4c00-8000-0000000c0005", "hooli",
     "ROOT/customers/eu", 0, "hooli-api-key", "hooli-secret-key"),
)  # fmt: skip
# (user id, api key, secret key) of initech's user "admin", whose username is the root
# admin's
SECOND_ADMIN = ("7a1d0c2e-0000-4c00-8000-0000000b0003", "partner-admin-api-key",
                "partner-admin-secret-key")  # fmt: skip
ROLE_TYPES = {0: "User", 1: "Admin", 2: "DomainAdmin"}
# A project in ROOT/customers (acme works in it): (project id, its project account's id,
# name). A project owns its resources through an account of type 5 (Account.Type.PROJECT)
# named PrjAcct-<name>-<id> (ProjectManagerImpl.createProject); the bus names that
# account's UUID as "account" of the project's ActionEvents (ActionEventUtils.
# getOwnerAccountId, publishOnEventBus), listProjects answers with the project's name and
# domain (ProjectResponse), and listAccounts never lists a project account
# (QueryManagerImpl.searchForAccountsInternal: "typeNEQ" Account.Type.PROJECT).
PROJECT = ("7a1d0c2e-0000-4c00-8000-0000000f0001", "7a1d0c2e-0000-4c00-8000-0000000c00f1",
           "webshop")  # fmt: skip


@dataclass
class Directory:
    """The simulated cloud's users, accounts, domains and resources, by UUID: what the list
    commands answer. Resources are learned from the listEvents rows the simulator makes
    (their ``resourceid``, ``resourcetype`` and ``resourcename``)."""

    items: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # user id -> (api, secret)
    # (kind, UUID) that exist but that their list command leaves out: a 200 with no items
    unlisted: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        from csnotify.simulator.generator import ACCOUNT_UUID, DOMAIN_UUID, USER_UUID

        domain = {"id": DOMAIN_UUID, "name": "ROOT", "path": "ROOT", "level": 0}
        self.add("domain", domain)
        owner = {"account": "admin", "accountid": ACCOUNT_UUID, "domain": "ROOT",
                 "domainid": DOMAIN_UUID}  # fmt: skip
        self.add("account", {"id": ACCOUNT_UUID, "name": "admin", "accounttype": 1,
                             "domain": "ROOT", "domainid": DOMAIN_UUID})  # fmt: skip
        self.add("user", {"id": USER_UUID, "username": "admin", "accounttype": 1,
                          "roletype": "Admin", "state": "enabled", **owner})  # fmt: skip
        for domain_id, path in TENANT_DOMAINS:
            self.add("domain", {"id": domain_id, "name": path.rsplit("/", 1)[-1], "path": path,
                                "level": path.count("/"), "parentid": DOMAIN_UUID})  # fmt: skip
        for user_id, account_id, name, path, kind, api_key, secret_key in TENANTS:
            domain_id = next(d for d, p in TENANT_DOMAINS if p == path)
            where = {"domain": path.rsplit("/", 1)[-1], "domainid": domain_id}
            self.add("account", {"id": account_id, "name": name, "accounttype": kind, **where})
            user = {
                "id": user_id,
                "username": name,
                "account": name,
                "accountid": account_id,
                "accounttype": kind,
                "state": "enabled",
                "roletype": ROLE_TYPES[kind],
            }
            self.add("user", {**user, "apikey": api_key, **where})
            self.keys[user_id] = (api_key, secret_key)
        # a second user of initech named as the root admin's user: a username is unique
        # within its domain only (server/src/main/java/com/cloud/user/AccountManagerImpl.java,
        # createUser: validateUsernameInDomain)
        user_id, account_id, name, path, kind, api_key, secret_key = TENANTS[2]
        domain_id = next(d for d, p in TENANT_DOMAINS if p == path)
        self.add("user", {"id": SECOND_ADMIN[0], "username": "admin", "account": name,
                          "accountid": account_id, "accounttype": kind, "state": "enabled",
                          "roletype": ROLE_TYPES[kind], "apikey": SECOND_ADMIN[1],
                          "domain": path.rsplit("/", 1)[-1], "domainid": domain_id})  # fmt: skip
        self.keys[SECOND_ADMIN[0]] = SECOND_ADMIN[1:]
        project_id, project_account_id, name = PROJECT
        domain_id = next(d for d, p in TENANT_DOMAINS if p == "ROOT/customers")
        self.add("project", {"id": project_id, "name": name, "displaytext": name,
                             "domain": "customers", "domainid": domain_id, "state": "Active",
                             "projectaccountname": f"PrjAcct-{name}-1"})  # fmt: skip
        self.unlisted.add(("account", project_account_id))

    def add(self, kind: str, item: dict[str, Any]) -> None:
        self.items.setdefault(kind, {})[item["id"]] = item

    def learn(self, row: dict[str, Any]) -> None:
        kind, uuid, name = row.get("resourcetype"), row.get("resourceid"), row.get("resourcename")
        if kind and uuid and name and uuid not in self.items.get(kind, {}):
            owner = {k: row.get(k) for k in ("account", "domainid", "domain")}
            self.add(kind, {"id": uuid, "name": name, **owner})

    def answer(self, command: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """By ``id``, as CloudStack: an unknown UUID is refused by ParamProcessWorker
        (translateUuidToInternalId) with a 431 before the command runs. Without ``id``,
        listAccounts and listUsers search as QueryManagerImpl does for the root admin
        whose keys the simulator holds (``accounts``, ``users``)."""
        kind, key = LIST_COMMANDS[command]
        wrapper = f"{command.lower()}response"
        uuid = params.get("id")
        domain_id = params.get("domainid")
        if uuid is None and domain_id is not None and domain_id not in self.items["domain"]:
            return 431, _unknown(command, "domainid", domain_id)  # ParamProcessWorker
        if uuid is None and command == "listAccounts":
            found = self.accounts(params)
        elif uuid is None and command == "listUsers":
            found = self.users(params)
        elif uuid is None:
            found = list(self.items.get(kind, {}).values())
        elif uuid in self.items.get(kind, {}):
            found = [self.items[kind][uuid]]
        elif (kind, uuid) in self.unlisted:
            found = []
        else:
            return 431, _unknown(command, "id", uuid)
        return 200, {wrapper: {"count": len(found), key: found} if found else {}}

    def _in_domain(self, item: dict[str, Any], domain_id: str, recursive: bool) -> bool:
        if item.get("domainid") == domain_id:
            return True
        if not recursive:
            return False
        path = self.items["domain"][domain_id]["path"]
        own = self.items["domain"].get(item.get("domainid", ""), {}).get("path", "")
        return own.startswith(path + "/")

    def accounts(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """listAccounts without ``id`` (api/.../user/account/ListAccountsCmd.java, server/
        .../api/query/QueryManagerImpl.java searchForAccountsInternal), for a root admin:
        with ``listall=true`` the search is recursive from ``domainid`` (else ROOT); without
        it, ``domainid`` alone is that domain (recursive with ``isrecursive=true``), and no
        ``domainid`` is the caller's own account. ``name`` is compared as MySQL compares
        (``=``, case-insensitive collation). Project accounts are never listed."""
        from csnotify.simulator.generator import ACCOUNT_UUID, DOMAIN_UUID

        domain_id = params.get("domainid")
        recursive = params.get("isrecursive", "").lower() == "true"
        if params.get("listall", "").lower() == "true":
            domain_id, recursive = domain_id or DOMAIN_UUID, True
        name = params.get("name")
        found = []
        for account in self.items.get("account", {}).values():
            if domain_id is None and account["id"] != ACCOUNT_UUID:
                continue
            if domain_id is not None and not self._in_domain(account, domain_id, recursive):
                continue
            if name is not None and account["name"].casefold() != name.casefold():
                continue
            found.append(account)
        return found

    def users(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """listUsers without ``id`` (api/.../admin/user/ListUsersCmd.java, QueryManagerImpl.
        searchForUsersInternal and getUserListInternal, AccountManagerImpl.
        buildACLSearchParameters), for a root admin: ``username`` is a LIKE pattern (``%``
        and ``_`` match anything; case-insensitive); ``account`` with ``domainid`` (else
        ROOT) that account's users; ``domainid`` that domain (recursive with
        ``isrecursive=true``); neither: every user with ``listall=true``, else only the
        caller's account's."""
        from csnotify.simulator.generator import ACCOUNT_UUID, DOMAIN_UUID

        domain_id = params.get("domainid")
        recursive = params.get("isrecursive", "").lower() == "true"
        account = params.get("account")
        listall = params.get("listall", "").lower() == "true"
        pattern = params.get("username")
        like = None
        if pattern is not None:
            parts = (".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
            like = re.compile("".join(parts), re.IGNORECASE | re.DOTALL)
        found = []
        for user in self.items.get("user", {}).values():
            if account is not None:
                where = domain_id or DOMAIN_UUID
                if user["account"].casefold() != account.casefold() or user["domainid"] != where:
                    continue
            elif domain_id is not None:
                if not self._in_domain(user, domain_id, recursive):
                    continue
            elif not listall and user["accountid"] != ACCOUNT_UUID:
                continue
            if like is not None and not like.fullmatch(user["username"]):
                continue
            found.append(user)
        return found


def _unknown(command: str, name: str, value: str) -> dict[str, Any]:
    """ParamProcessWorker.translateUuidToInternalId: a UUID of no entity, a 431."""
    return error(
        command,
        431,
        f"Unable to execute API command {command.lower()} due to invalid value."
        f" Invalid parameter {name} value={value} due to incorrect long value format, or"
        " entity does not exist or due to incorrect parameter annotation for the"
        " field in api cmd class.",
    )


@dataclass
class Behaviour:
    """How this stand-in behaves where CloudStack deployments differ: the JVM's zone, the
    ``default.page.size`` setting, and where ties come from."""

    zone: tzinfo = UTC
    max_page_size: int = 500
    rng: random.Random = field(default_factory=random.Random)


# BaseCmd.newInputDateFormat (api/src/main/java/org/apache/cloudstack/api/BaseCmd.java)
_NEW_INPUT = re.compile(r"[\d]+-[\d]+-[\d]+ [\d]+:[\d]+:[\d]+")
_DATE_PREFIX = re.compile(r"(\d+)-(\d+)-(\d+)")
_WITH_OFFSET = re.compile(r"\d+-\d+-\d+T\d+:\d+:\d+[+-]\d{4}")  # SimpleDateFormat's Z


def _in_zone(wall: datetime, zone: tzinfo) -> datetime:
    """A wall-clock time read in the JVM zone, as java.util's lenient Calendar does: a
    repeated hour (DST ends) is read as the later instant, standard time, which is the
    reading that would make a careless client lose events; a skipped hour moves forward."""
    later = wall.replace(tzinfo=zone, fold=1)
    if later.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall:
        return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)  # in a gap: moved forward
    return later.astimezone(UTC)


def parse_api_date(text: str, field_name: str, zone: tzinfo) -> datetime:
    """``startdate``/``enddate`` as server/src/main/java/com/cloud/api/dispatch/
    ParamProcessWorker.java setFieldValue (DATE, ListEventsCmd) reads them:
    ``yyyy-MM-dd HH:mm:ss`` in the JVM zone; else ``yyyy-MM-dd`` (lenient: the rest of the
    text is ignored) at 00:00:00 for a start and 23:59:59 for an end (``messageDate``).
    ``yyyy-MM-dd'T'HH:mm:ssZ`` with its own offset: accepted since 4.18 (PR 7032)."""
    value = text.strip()
    if _NEW_INPUT.fullmatch(value):
        wall = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")  # noqa: DTZ007 - in the JVM zone
        return _in_zone(wall, zone)
    if _WITH_OFFSET.fullmatch(value):
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z").astimezone(UTC)
    match = _DATE_PREFIX.match(value)
    if not match:
        raise ValueError(text)
    day = datetime(*(int(g) for g in match.groups()))  # noqa: DTZ001 - a wall time
    if field_name == "enddate":
        day = day.replace(hour=23, minute=59, second=59)
    return _in_zone(day, zone)


def _created(row: dict[str, Any]) -> datetime:
    return datetime.strptime(row["created"], "%Y-%m-%dT%H:%M:%S%z")


def error(command: str, code: int, text: str) -> dict[str, Any]:
    return {f"{command.lower()}response": {"uuidList": [], "errorcode": code, "errortext": text}}


def _param_error(text: str) -> tuple[int, dict[str, Any]]:
    return 431, error("listEvents", 431, text)


def list_events(
    log: EventLog, params: dict[str, str], behaviour: Behaviour | None = None
) -> tuple[int, dict[str, Any]]:
    """Filter, order and page as server/src/main/java/com/cloud/api/query/QueryManagerImpl
    .java searchForEventsInternal: ``createDate`` descending and nothing else, so rows of
    one second come back in a different order on every query (MySQL gives ties no order).
    Parameters are looked up by their exact annotation names, all lower case
    (ParamProcessWorker: ``params.get(parameterAnnotation.name())``): ``startDate`` is
    silently ignored, as by CloudStack."""
    how = behaviour or Behaviour()
    try:
        start, end = (
            parse_api_date(params[name], name, how.zone) if name in params else None
            for name in ("startdate", "enddate")
        )
    except ValueError as exc:
        return _param_error(
            f"Unable to parse date {exc} for command listEvents, please pass dates in the"
            " format mentioned in the api documentation"
        )  # ParamProcessWorker.processParameters, ParseException
    try:
        page = int(params["page"]) if "page" in params else None
        pagesize = int(params["pagesize"]) if "pagesize" in params else None
    except ValueError:
        name = "page" if not params.get("page", "0").lstrip("-").isdigit() else "pagesize"
        return _param_error(
            f"Unable to execute API command listevents due to invalid value"
            f" {params[name]} for parameter {name}"
        )
    # BaseListCmd (api/src/main/java/org/apache/cloudstack/api/BaseListCmd.java):
    # validateSpecificParameters wants page and pagesize together (pagesize -1 alone is
    # allowed); getPageSize refuses more than default.page.size.
    if page is not None and pagesize is None:
        return _param_error('"pagesize" parameter is required when "page" is specified')
    if pagesize is not None and pagesize != -1 and page is None:
        return _param_error('"page" parameter is required when "pagesize" is specified')
    if pagesize is not None and pagesize > how.max_page_size:
        return _param_error(
            f"Page size can't exceed max allowed page size value: {how.max_page_size}"
        )
    if pagesize == -1 and page is not None:
        return _param_error("Can't specify page parameter when pagesize is -1 (Unlimited)")
    keyword = params.get("keyword", "").lower()
    rows = []
    for row in log.rows:
        created = _created(row)
        if start and created < start:
            continue
        if end and created > end:
            continue
        if "type" in params and row["type"] != params["type"]:
            continue
        if "level" in params and row["level"] != params["level"]:
            continue
        if "account" in params and row.get("account") != params["account"]:
            continue
        if "id" in params and row["id"] != params["id"]:
            continue
        if (
            keyword
            and keyword not in row["type"].lower()
            and keyword not in row.get("description", "").lower()
        ):
            continue
        rows.append((created, how.rng.random(), row))
    rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
    if not rows:
        return 200, {"listeventsresponse": {}}
    size = len(rows) if pagesize == -1 else (pagesize or how.max_page_size)
    # BaseListCmd.getStartIndex: (page - 1) * pagesize; a page below 1 starts at 0
    first = (max(page or 1, 1) - 1) * size
    chosen = [r for _, _, r in rows[first : first + size]]
    inner: dict[str, Any] = {"count": len(rows)}
    if chosen:  # past the end: the count and no event list (ListResponse with no items)
        inner["event"] = chosen
    return 200, {"listeventsresponse": inner}


CAPABILITIES = {
    "listcapabilitiesresponse": {
        "capability": {
            "cloudstackversion": VERSION,
            "apilimitinterval": 1,
            "apilimitmax": 0,
            "allowusercreateprojects": True,
            "customdiskofferingmaxsize": 1024,
            "kvmsnapshotenabled": True,
        }
    }
}
APIS = {
    "listapisresponse": {
        "count": 3,
        "api": [
            {"name": name, "description": text, "isasync": False, "related": "", "params": params,
             "response": []}
            for name, text, params in (
                ("listEvents", "A command to list events.",
                 [{"name": n, "type": t, "required": False} for n, t in (
                     ("startdate", "date"), ("enddate", "date"), ("type", "string"),
                     ("level", "string"), ("keyword", "string"), ("account", "string"),
                     ("page", "integer"), ("pagesize", "integer"), ("listall", "boolean"))]),
                ("listCapabilities", "Lists capabilities", []),
                ("listApis", "lists all available apis on the server", []),
            )
        ],
    }
}  # fmt: skip


@dataclass
class Api:
    api_key: str
    secret_key: str
    log: EventLog
    behaviour: Behaviour = field(default_factory=Behaviour)
    requests: dict[str, int] = field(default_factory=dict)
    directory: Directory = field(default_factory=Directory)

    def verify(self, params: dict[str, str]) -> bool:
        if params.get("apiKey") != self.api_key or "signature" not in params:
            return False
        expected = api_signature(params, self.secret_key)
        if not hmac.compare_digest(expected, params["signature"]):
            return False
        if params.get("signatureVersion") == "3":
            try:
                expires = datetime.strptime(params["expires"], "%Y-%m-%dT%H:%M:%S%z")
            except (KeyError, ValueError):
                return False
            if expires < datetime.now(UTC):
                return False
        return True

    def __post_init__(self) -> None:
        from csnotify.simulator.generator import USER_UUID

        self.directory.keys[USER_UUID] = (self.api_key, self.secret_key)

    def get_user(self, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """GetUserCmd (api/src/main/java/org/apache/cloudstack/api/command/admin/user/
        GetUserCmd.java): the user whose API key is ``userapikey``, as a UserResponse
        named "user"; an unknown key is InvalidParameterValueException (431)."""
        key = params.get("userapikey", "")
        for user_id, (api_key, _secret) in self.directory.keys.items():
            if key and hmac.compare_digest(api_key, key):
                user = dict(self.directory.items["user"][user_id])
                user.pop("secretkey", None)
                return 200, {"getuserresponse": {"user": {**user, "apikey": api_key}}}
        return 431, error("getUser", 431, "User with specified API key does not exist")

    def get_user_keys(self, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """GetUserKeysCmd (api/src/main/java/org/apache/cloudstack/api/command/admin/user/
        GetUserKeysCmd.java): a RegisterResponse named "userkeys" with apikey and
        secretkey of the user ``id``."""
        keys = self.directory.keys.get(params.get("id", ""))
        if keys is None:
            return 431, error("getUserKeys", 431, "Unable to execute API command getuserkeys"
                              " due to invalid value. Invalid parameter id value")  # fmt: skip
        return 200, {"getuserkeysresponse": {"userkeys": {"apikey": keys[0], "secretkey": keys[1]}}}

    def answer(self, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        command = params.get("command", "")
        self.requests[command] = self.requests.get(command, 0) + 1
        if not self.verify(params):
            return 401, error(command or "api", 401, AUTH_ERROR)
        if command == "listEvents":
            return list_events(self.log, params, self.behaviour)
        if command == "listCapabilities":
            return 200, CAPABILITIES
        if command == "listApis":
            return 200, APIS
        if command in LIST_COMMANDS:
            return self.directory.answer(command, params)
        if command == "getUser":
            return self.get_user(params)
        if command == "getUserKeys":
            return self.get_user_keys(params)
        return 432, error(
            command or "api",
            432,
            "The given command does not exist or it is not available for user",
        )

    async def handle(self, request: web.Request) -> web.Response:
        from aiohttp import web

        # ApiServlet reads the query string and a POSTed form body alike
        # (server/src/main/java/com/cloud/api/ApiServlet.java, req.getParameterMap()).
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        status, doc = self.answer(params)
        return web.json_response(doc, status=status)

    async def stats(self, _request: web.Request) -> web.Response:
        """Not CloudStack's: how many requests of each command, for tests and the demo."""
        from aiohttp import web

        return web.json_response({"requests": self.requests, "events": len(self.log.rows)})

    def app(self) -> web.Application:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/client/api", self.handle)
        app.router.add_post("/client/api", self.handle)
        app.router.add_get("/simulator/stats", self.stats)
        return app
