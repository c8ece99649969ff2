"""A small client for CloudStack's API: signed requests (apiKey + HMAC-SHA1,
``signatureVersion=3`` with ``expires``), JSON answers, CloudStack's error codes, and
listEvents with paging."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from csnotify.errors import BadInput, Unreachable
from csnotify.signing import signed_api_query

if TYPE_CHECKING:
    import httpx

    from csnotify.config import Settings

PAGE_SIZE = 500
EXPIRES_AFTER = timedelta(minutes=5)
API_DATE = "%Y-%m-%d %H:%M:%S"  # listEvents startdate/enddate


class ApiUnavailable(Unreachable):
    """Down, overloaded or answering nonsense: worth trying again later."""


class ApiRefused(Unreachable):
    """The key, the signature or the permission was refused: retrying will not help."""


@dataclass(frozen=True)
class Credentials:
    url: str
    api_key: str
    secret_key: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials:
        creds = cls(
            settings["cloudstack.url"],
            settings["cloudstack.api_key"],
            settings["cloudstack.secret_key"],
        )
        if not creds.api_key or not creds.secret_key:
            raise BadInput(
                "no CloudStack API key: set cloudstack.api_key and cloudstack.secret_key"
                " ('csnotify config set', CSNOTIFY_CLOUDSTACK_SECRET_KEY,"
                " or 'csnotify config import-cmk')"
            )
        return creds


def api_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(API_DATE)


class CloudStackClient:
    def __init__(self, creds: Credentials, timeout: float = 30.0) -> None:
        import httpx

        self.creds = creds
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> CloudStackClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, command: str, **params: Any) -> dict[str, Any]:
        import httpx

        query = {k: str(v) for k, v in params.items() if v is not None}
        expires = (datetime.now(UTC) + EXPIRES_AFTER).strftime("%Y-%m-%dT%H:%M:%S+0000")
        query |= {
            "command": command,
            "response": "json",
            "apiKey": self.creds.api_key,
            "signatureVersion": "3",
            "expires": expires,
        }
        url = f"{self.creds.url}?{signed_api_query(query, self.creds.secret_key)}"
        try:
            response = await self._http.get(url)
        except httpx.TimeoutException:
            raise ApiUnavailable(
                f"CloudStack API at {self.creds.url} did not answer in time"
            ) from None
        except httpx.HTTPError as exc:
            raise ApiUnavailable(
                f"cannot reach the CloudStack API at {self.creds.url}: {exc}"
            ) from None
        return self._answer(command, response)

    def _answer(self, command: str, response: httpx.Response) -> dict[str, Any]:
        wrapper = command.lower() + "response"
        try:
            doc = response.json()
        except ValueError:
            doc = None
        inner = doc.get(wrapper) if isinstance(doc, dict) else None
        status = response.status_code
        text = inner.get("errortext") if isinstance(inner, dict) else None
        if status == 401:
            raise ApiRefused(
                f"CloudStack refused the API key or signature (401: {text or 'unauthorised'});"
                " check cloudstack.api_key and cloudstack.secret_key ('csnotify config show')"
            )
        if status == 432:
            raise ApiRefused(
                f"CloudStack does not allow {command} for this API key"
                f" (432: {text or 'unsupported'}); use the keys of an account that may call it"
            )
        if status == 431:
            raise BadInput(f"CloudStack rejected a parameter of {command} (431: {text})")
        if status >= 500 or status == 429:
            raise ApiUnavailable(
                f"CloudStack API answered {status}: {text or response.reason_phrase}"
            )
        if status != 200 or not isinstance(inner, dict):
            raise ApiUnavailable(
                f"CloudStack API gave an unexpected answer to {command} (HTTP {status},"
                f" {'no ' + wrapper if doc is not None else 'not JSON'})"
            )
        return inner

    async def list_events(self, limit: int | None = None, **filters: Any) -> list[dict[str, Any]]:
        """All matching events, newest first, following the pages (``limit`` stops early)."""
        events: list[dict[str, Any]] = []
        page = 1
        pagesize = min(PAGE_SIZE, limit) if limit else PAGE_SIZE
        while True:
            inner = await self.call(
                "listEvents", listall="true", page=page, pagesize=pagesize, **filters
            )
            batch = inner.get("event", [])
            if not isinstance(batch, list):
                raise ApiUnavailable("CloudStack API answered listEvents with a malformed page")
            events += [e for e in batch if isinstance(e, dict)]
            total = inner.get("count", 0)
            if limit and len(events) >= limit:
                return events[:limit]
            if len(batch) < pagesize or (isinstance(total, int) and len(events) >= total):
                return events
            page += 1
