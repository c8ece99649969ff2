"""The simulator's HTTP API at /client/api: listEvents, listCapabilities and listApis,
with requests verified the way CloudStack's ApiServer verifies them."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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


def _parse_api_date(text: str, end: bool) -> datetime:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            moment = datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
        if fmt == "%Y-%m-%d" and end:
            moment += timedelta(days=1, seconds=-1)
        return moment
    raise ValueError(text)


def _created(row: dict[str, Any]) -> datetime:
    return datetime.strptime(row["created"], "%Y-%m-%dT%H:%M:%S%z")


def error(command: str, code: int, text: str) -> dict[str, Any]:
    return {f"{command.lower()}response": {"uuidList": [], "errorcode": code, "errortext": text}}


def list_events(log: EventLog, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Filter, order (newest first: created, then id, descending) and page, as CloudStack."""
    try:
        start = _parse_api_date(params["startdate"], end=False) if "startdate" in params else None
        end = _parse_api_date(params["enddate"], end=True) if "enddate" in params else None
        page = int(params.get("page", 1))
        pagesize = int(params.get("pagesize", 500))
        if page < 1 or pagesize < 1:
            raise ValueError
    except ValueError:
        return 431, error("listEvents", 431, "Unable to parse a parameter of listEvents")
    keyword = params.get("keyword", "").lower()
    rows = []
    for seq, row in enumerate(log.rows):
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
        rows.append((created, seq, row))
    rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
    if not rows:
        return 200, {"listeventsresponse": {}}
    chosen = [r for _, _, r in rows[(page - 1) * pagesize : page * pagesize]]
    return 200, {"listeventsresponse": {"count": len(rows), "event": chosen}}


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
    requests: dict[str, int] = field(default_factory=dict)

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

    def answer(self, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        command = params.get("command", "")
        self.requests[command] = self.requests.get(command, 0) + 1
        if not self.verify(params):
            return 401, error(command or "api", 401, AUTH_ERROR)
        if command == "listEvents":
            return list_events(self.log, params)
        if command == "listCapabilities":
            return 200, CAPABILITIES
        if command == "listApis":
            return 200, APIS
        return 432, error(
            command or "api",
            432,
            "The given command does not exist or it is not available for user",
        )

    async def handle(self, request: web.Request) -> web.Response:
        from aiohttp import web

        status, doc = self.answer(dict(request.query))
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
