"""The API as CloudStack API commands at ``/client/api``, so that CloudMonkey (``cmk``) and
other CloudStack clients work unchanged: ``cmk set url http://HOST:PORT/client/api``,
``cmk sync``, ``cmk create subscription ...``.

A request is a CloudStack API call (server/src/main/java/com/cloud/api/ApiServlet.java):
``command`` and the parameters in the query or a POSTed form, signed with the caller's
CloudStack keys (signed.py; every parameter, ``command`` included). Each command is one
row of COMMANDS and calls the function of operations.py its ``/v1`` route calls: the
same scope, policy, limits and messages.

Parameters are lower-case names, as CloudStack's. A list is comma-separated
(``patterns=VM.*,VOLUME.*``, CloudStack's ``list`` type, ParamProcessWorker.java) or, for
values that hold a comma, in CloudStack's map form, ``endpoints[0].uri=...&endpoints[1].uri=...``
(as ``tags[0].key=`` in CreateTagsCmd.java). Of a name given twice, the first value counts
(ApiServer.verifyRequest reads ``[0]``). An unknown parameter is refused, but for those
CloudMonkey adds (``response``, ``filter``, ``exclude``, ``listall``).

Answers are CloudStack's JSON: ``{"<command>response": {...}}`` with ``count`` and a list
for list commands (``{}`` when the list is empty, as ApiResponseSerializer writes an empty
ListResponse), the object under its name for the others. ``listApis`` describes every
command as CloudStack's does, which is what ``cmk sync`` reads (cloudstack-cloudmonkey
config/cache.go, ``UpdateCache``). Errors are CloudStack's ExceptionResponse with the
HTTP status = ``errorcode`` (api/src/main/java/org/apache/cloudstack/api/ApiErrorCode.java;
``cserrorcode`` from utils/.../exception/CSExceptionErrorCode.java), named after the
command, or ``errorresponse`` for an unknown one (ApiServer.getSerializedApiError).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from csnotify.api import bodies, operations
from csnotify.errors import CsnotifyError
from csnotify.redact import mask_text

if TYPE_CHECKING:
    from collections.abc import Mapping

    from csnotify.api.operations import Service
    from csnotify.tokens import Caller

PATH = "/client/api"

STRING, BOOLEAN, INTEGER, LIST = "string", "boolean", "integer", "list"

# sent by CloudMonkey with every call (cmd/network.go: response=json; cmd/api.go passes its
# own filter= and exclude= on; cmd/sync.go: listApis listall=true); the credentials
CLIENT_PARAMS = {"command", "response", "filter", "exclude", "listall"}
CREDENTIALS = {"apikey", "signature", "signatureversion", "expires"}

# ApiErrorCode by the HTTP status /v1 answers: a value refused is InvalidParameterValue
# (431), as is a name not found or taken (CloudStack says "Unable to find ..." with 431);
# the policy is PermissionDenied (531); a busy store an internal error (530)
ERROR_CODE = {400: 431, 403: 531, 404: 431, 409: 431, 413: 431, 422: 431, 500: 530, 503: 530}
UNSUPPORTED = 432
# CSExceptionErrorCode of the exception CloudStack would throw for each
CS_ERROR_CODE = {431: 4350, 531: 4365, 429: 4545, 530: 4250, UNSUPPORTED: 9999}


class UnknownCommand(CsnotifyError):
    """No such command: CloudStack's UNSUPPORTED_ACTION_ERROR (432)."""


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # CloudStack's parameter type: string, boolean, integer, list
    description: str
    required: bool = False
    item: str = ""  # a list's key in the map form: name[0].<item>=

    def as_api(self) -> dict[str, Any]:
        """As listApis describes a parameter (ApiParameterResponse)."""
        return {"name": self.name, "description": self.description, "type": self.type,
                "length": 255, "required": self.required, "related": ""}  # fmt: skip


Run = Callable[["Service", "Caller", dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Command:
    name: str
    description: str
    params: tuple[Param, ...]
    run: Run
    response: tuple[str, ...]  # the keys of what it answers, for listApis

    @property
    def response_name(self) -> str:
        return f"{self.name.lower()}response"

    def as_api(self) -> dict[str, Any]:
        """As listApis describes a command (ApiDiscoveryResponse)."""
        return {
            "name": self.name,
            "description": self.description,
            "isasync": False,
            "related": "",
            "since": "",
            "type": "",
            "params": [p.as_api() for p in self.params],
            "response": [{"name": r, "description": "", "type": ""} for r in self.response],
        }


def _listed(key: str, items: list[Any]) -> dict[str, Any]:
    """A ListResponse: ``count`` and the items, or ``{}`` when there are none."""
    return {"count": len(items), key: items} if items else {}


# -- what each command does: one call of operations.py ------------------------------

# parameter -> the /v1 body field it fills (the others fill the field of their name)
FIELD_OF = {"groupwait": "group_wait", "maxperminute": "max_per_minute",
            "strictorder": "strict_order", "newname": "name"}  # fmt: skip


def _body(args: dict[str, Any], *target: str) -> dict[str, Any]:
    """The parameters as the /v1 body the operation takes; ``target``: the parameters
    that name what is changed, not part of it."""
    if args.get("nokey") and "key" in args:
        raise bodies.Malformed("give 'key' or nokey=true, not both")
    doc: dict[str, Any] = {}
    for name, value in args.items():
        if name in target:
            continue
        if name == "nokey":
            if value:
                doc["key"] = None
            continue
        doc[FIELD_OF.get(name, name)] = (
            [{"uri": uri} for uri in value] if name == "endpoints" else value
        )
    return doc


async def _create(api: Service, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    return {"subscription": await operations.create(api, caller, _body(args))}


async def _list(api: Service, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    from csnotify.errors import NotFound

    if args.get("name") is None:
        return _listed("subscription", await operations.list_subscriptions(api, caller))
    try:  # a list by a name not in scope is empty, as CloudStack's list commands answer
        return _listed("subscription", [await operations.show(api, caller, args["name"])])
    except NotFound:
        return {}


async def _update(api: Service, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    doc = _body(args, "name")
    return {"subscription": await operations.update(api, caller, args["name"], doc)}


async def _delete(api: Service, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    await operations.delete(api, caller, args["name"])
    return {"success": True}  # SuccessResponse


async def _enable(api: Service, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    return {"subscription": await operations.set_enabled(api, caller, args["name"], True)}


async def _disable(api: Service, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    return {"subscription": await operations.set_enabled(api, caller, args["name"], False)}


async def _test(api: Service, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    return _listed("result", await operations.test(api, caller, args["name"]))


async def _deliveries(api: Service, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    rows = await operations.deliveries(
        api, caller, args.get("subscription"), args.get("failed", False), args.get("limit", 50)
    )
    return _listed("delivery", rows)


async def _event_types(api: Service, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    # as CloudStack's listEventTypes answers: {"eventtype": [{"name": ...}]}
    names = operations.event_types(args.get("match"))
    return _listed("eventtype", [{"name": n} for n in names])


async def _match(api: Service, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    found = await operations.match(
        api, caller, args.get("type"), args.get("level"), args.get("where", [])
    )
    return {"event": found["event"], **_listed("subscription", found["subscriptions"])}


async def _apis(api: Service, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    wanted = args.get("name")
    return _listed("api", [c.as_api() for c in COMMANDS.values() if wanted in (None, c.name)])


# -- the commands ------------------------------------------------------------------

NAME = Param("name", STRING, "the subscription's name", required=True)
SETTINGS = (
    Param("level", STRING, "the minimum level: INFO, WARN or ERROR"),
    Param("where", LIST, "filters FIELD=VALUE or FIELD~REGEX, all must hold", item="filter"),
    Param("format", STRING, "what a webhook is sent: json, cloudevents or cloudstack"),
    Param("key", STRING, "the signing secret, or 'generate' (shown once)"),
    Param("title", STRING, "the message title template"),
    Param("body", STRING, "the message body template"),
    Param("categories", LIST, "CloudStack event categories to take", item="category"),
    Param("states", LIST, "CloudStack event states (phases) to take", item="state"),
    Param("groupwait", STRING, "wait this long to send related events as one (30s; 0: off)"),
    Param("maxperminute", STRING, "messages a minute per endpoint (0: no limit, or default)"),
    Param("strictorder", BOOLEAN, "per endpoint, one order for all events (not per resource)"),
)
PATTERNS = "event types, e.g. VM.*,VOLUME.CREATE"
ENDPOINTS = "https://, mailto:// ... endpoint URIs"
SUBSCRIPTION = ("name", "patterns", "endpoints", "level", "where", "format", "enabled",
                "owner", "generated_key", "notes")  # fmt: skip

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command(
            "createSubscription",
            "Subscribes endpoints to the caller's CloudStack events (csnotify subscribe)",
            (
                Param(
                    "name",
                    STRING,
                    "1-64 letters, digits, _ - . (made up if not given)",
                ),
                Param("patterns", LIST, PATTERNS, required=True, item="pattern"),
                Param("endpoints", LIST, ENDPOINTS, required=True, item="uri"),
                *SETTINGS,
                Param("enabled", BOOLEAN, "false: made disabled"),
            ),
            _create,
            SUBSCRIPTION,
        ),
        Command(
            "listSubscriptions",
            "Lists the subscriptions the caller sees (csnotify list)",
            (Param("name", STRING, "only this subscription"),),
            _list,
            SUBSCRIPTION,
        ),
        Command(
            "updateSubscription",
            "Changes a subscription: what is given replaces what it had (csnotify update)",
            (
                NAME,
                Param("newname", STRING, "rename it"),
                Param("patterns", LIST, PATTERNS, item="pattern"),
                Param("endpoints", LIST, ENDPOINTS, item="uri"),
                *SETTINGS,
                Param("nokey", BOOLEAN, "true: stop signing"),
            ),
            _update,
            SUBSCRIPTION,
        ),
        Command(
            "deleteSubscription",
            "Deletes a subscription (csnotify unsubscribe)",
            (NAME,),
            _delete,
            ("success",),
        ),
        Command(
            "enableSubscription",
            "Enables a subscription (csnotify enable)",
            (NAME,),
            _enable,
            SUBSCRIPTION,
        ),
        Command(
            "disableSubscription",
            "Disables a subscription (csnotify disable)",
            (NAME,),
            _disable,
            SUBSCRIPTION,
        ),
        Command(
            "testSubscription",
            "Sends a test message to each endpoint of a subscription (csnotify test)",
            (NAME,),
            _test,
            ("endpoint", "kind", "ok", "latency_ms", "status", "error"),
        ),
        Command(
            "listDeliveries",
            "Lists deliveries, newest first (csnotify deliveries)",
            (
                Param("subscription", STRING, "only this subscription's"),
                Param("failed", BOOLEAN, "only failed ones"),
                Param("limit", INTEGER, "at most this many (1-10000, default 50)"),
            ),
            _deliveries,
            ("at", "subscription", "endpoint", "event", "ok", "status", "error"),
        ),
        Command(
            "listEventTypes",
            "Lists CloudStack's event types, or those a pattern takes",
            (Param("match", STRING, "a pattern such as VM.*"),),
            _event_types,
            ("name",),
        ),
        Command(
            "matchEvent",
            "Says which of the caller's subscriptions an event would reach (csnotify match)",
            (
                Param("type", STRING, "the event type, e.g. VM.START", required=True),
                Param("level", STRING, "INFO (default), WARN or ERROR"),
                Param("where", LIST, "the event's fields FIELD=VALUE", item="field"),
            ),
            _match,
            ("event", "subscription"),
        ),
        Command(
            "listApis",
            "Lists the commands of this API, as CloudStack's listApis does (cmk sync)",
            (Param("name", STRING, "only this command"),),
            _apis,
            ("name", "description", "isasync", "params", "response"),
        ),
    )
}


# -- requests and answers ----------------------------------------------------------


async def request_params(request: web.Request) -> dict[str, str]:
    """The query and a POSTed form alike (ApiServlet: ``req.getParameterMap()``), the
    first value of a name given twice."""
    params: dict[str, str] = {}
    for name, value in request.query.items():
        params.setdefault(name, value)
    if request.method == "POST":
        try:
            form = await request.post()
        except ValueError:  # a multipart body that does not hold what its header says
            raise bodies.Malformed(
                "the form body does not match its Content-Type; send"
                " application/x-www-form-urlencoded"
            ) from None
        for name, value in form.items():
            if not isinstance(value, str):
                raise bodies.Malformed(f"parameter {name!r} must be text, not a file")
            params.setdefault(name, value)
    return params


def named(params: Mapping[str, str] | None) -> str:
    """The command a request names, for the access log and errors ('?' when it is not a
    name: nothing a caller sends may break a log line)."""
    command = (params or {}).get("command", "-")
    return command if command == "-" or re.fullmatch(r"[A-Za-z0-9]{1,64}", command) else "?"


_MAP_FORM = re.compile(r"([a-z]+)\[([0-9]{1,4})\]\.([a-z]+)")


def arguments(command: Command, params: Mapping[str, str]) -> dict[str, Any]:
    """The command's parameters from the request's, typed; what it does not take, a
    wrong type or a required one missing is refused (431), saying which."""
    taken = {p.name: p for p in command.params}
    plain: dict[str, str] = {}
    mapped: dict[str, dict[int, str]] = {}
    for name, value in params.items():
        if name in CLIENT_PARAMS or name.lower() in CREDENTIALS:
            continue
        form = _MAP_FORM.fullmatch(name)
        if form and form[1] in taken and taken[form[1]].item == form[3]:
            mapped.setdefault(form[1], {})[int(form[2])] = value
        elif name in taken:
            plain[name] = value
        else:
            raise bodies.Malformed(
                f"unknown parameter {name!r}; {command.name} takes {', '.join(taken)}"
            )
    if params.get("response", "json").lower() != "json":
        raise bodies.Malformed("only response=json is answered")
    args: dict[str, Any] = {}
    for name, param in taken.items():
        if name in plain and name in mapped:
            raise bodies.Malformed(
                f"give {name} as a comma-separated list or as {name}[N].{param.item}, not both"
            )
        if name in mapped:
            args[name] = [mapped[name][i] for i in sorted(mapped[name])]
        elif name in plain:
            args[name] = _typed(param, plain[name])
        elif param.required:
            needed = ", ".join(p.name for p in command.params if p.required)
            raise bodies.Malformed(f"missing parameter {name!r}; {command.name} needs {needed}")
    return args


def _typed(param: Param, text: str) -> Any:
    what = f"parameter {param.name!r}"
    if param.type == BOOLEAN:
        return operations.flag(text, what)
    if param.type == INTEGER:
        return operations.whole(text, what, 0)
    if param.type == LIST:  # CloudStack splits at commas (StringTokenizer: no empty items)
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


async def handle(api: Service, request: web.Request) -> web.Response:
    """``/client/api``: the command the parameters name, run for the caller."""
    params: dict[str, str] = request["params"]
    command = COMMANDS.get(params.get("command", ""))
    if command is None and "command" not in params:
        raise UnknownCommand("no command given; listApis lists the commands of this API")
    if command is None:
        raise UnknownCommand(
            f"unknown command {named(params)!r}; listApis lists the commands of this API"
        )
    answer = await command.run(api, request["caller"], arguments(command, params))
    return web.json_response({command.response_name: answer})


def error(
    params: Mapping[str, str] | None, status: int, text: str, headers: dict[str, str]
) -> web.Response:
    """A failure as CloudStack answers one: an ExceptionResponse under the command's
    response name (``errorresponse`` for a command there is not), the HTTP status its
    ``errorcode``."""
    code = ERROR_CODE.get(status, status)
    command = COMMANDS.get((params or {}).get("command", ""))
    name = command.response_name if command and code != UNSUPPORTED else "errorresponse"
    doc: dict[str, Any] = {"uuidList": [], "errorcode": code}
    if code in CS_ERROR_CODE:  # the 401 of ApiServlet carries none
        doc["cserrorcode"] = CS_ERROR_CODE[code]
    doc["errortext"] = mask_text(text)
    return web.json_response({name: doc}, status=code, headers=headers)
