"""A small client for CloudStack's API: signed requests (apiKey + HMAC-SHA1,
``signatureVersion=3`` with ``expires``), JSON answers, CloudStack's error codes, and
listEvents read completely (``EventReader``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from csnotify.errors import BadInput, Unreachable
from csnotify.events import strict_json
from csnotify.servertime import ServerClock, parse_zone
from csnotify.signing import signed_api_query

if TYPE_CHECKING:
    import httpx

    from csnotify.config import Settings

PAGE_SIZE = 500
EXPIRES_AFTER = timedelta(minutes=5)


class ApiUnavailable(Unreachable):
    """Down, overloaded or answering nonsense: worth trying again later."""


class ApiRefused(Unreachable):
    """The key, the signature or the permission was refused: retrying will not help."""


class PageSizeTooLarge(ApiRefused):
    """431 for ``pagesize``: BaseListCmd.getPageSize (api/src/main/java/org/apache/
    cloudstack/api/BaseListCmd.java) refuses a page above ``default.page.size`` with
    "Page size can't exceed max allowed page size value: N"."""

    def __init__(self, message: str, limit: int | None) -> None:
        super().__init__(message)
        self.limit = limit


_PAGE_LIMIT = re.compile(r"max allowed page size value: (\d+)")


@dataclass(frozen=True)
class Credentials:
    url: str
    api_key: str
    secret_key: str
    verify_tls: bool = True
    ca_file: str = ""
    timezone: str = ""  # cloudstack.timezone: empty = learn it
    page_size: int = PAGE_SIZE
    max_response_mb: int = 64  # an answer larger than this is refused, not held in memory
    max_pages: int = 2000  # listEvents pages one poll may read

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials:
        creds = cls(
            settings["cloudstack.url"],
            settings["cloudstack.api_key"],
            settings["cloudstack.secret_key"],
            settings["cloudstack.verify_tls"],
            settings["cloudstack.ca_file"],
            settings["cloudstack.timezone"],
            settings["cloudstack.page_size"],
            settings["cloudstack.max_response_mb"],
            settings["cloudstack.max_pages"],
        )
        creds.clock()  # an unknown zone is bad input before anything is sent
        if not creds.api_key or not creds.secret_key:
            raise BadInput(
                "no CloudStack API key: set cloudstack.api_key and cloudstack.secret_key"
                " ('csnotify config set', CSNOTIFY_CLOUDSTACK_SECRET_KEY,"
                " or 'csnotify config import-cmk')"
            )
        return creds

    def clock(self) -> ServerClock:
        return ServerClock(zone=parse_zone(self.timezone) if self.timezone.strip() else None)

    def tls(self) -> Any:
        """httpx's ``verify``: off, a private CA's bundle, or the system's."""
        if not self.verify_tls:
            return False
        if not self.ca_file:
            return True
        import ssl

        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise BadInput(f"cannot use cloudstack.ca_file {self.ca_file}: {exc}") from None


class CloudStackClient:
    def __init__(self, creds: Credentials, timeout: float = 30.0) -> None:
        import httpx

        self.creds = creds
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False, verify=creds.tls())

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
            async with self._http.stream("GET", url) as response:
                body = await self._capped(response)
        except httpx.TimeoutException:
            raise ApiUnavailable(
                f"CloudStack API at {self.creds.url} did not answer in time"
            ) from None
        except httpx.HTTPError as exc:
            raise ApiUnavailable(
                f"cannot reach the CloudStack API at {self.creds.url}: {exc}"
            ) from None
        return self._answer(command, response, body)

    async def _capped(self, response: httpx.Response) -> bytes:
        """The body, refused past ``max_response_mb``: a hostile or spoofed API (plain
        http) must not make us hold gigabytes."""
        limit = self.creds.max_response_mb * 1024 * 1024
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise ApiUnavailable(
                    f"CloudStack API at {self.creds.url} answered more than"
                    f" {self.creds.max_response_mb} MB (cloudstack.max_response_mb); refused"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _answer(self, command: str, response: httpx.Response, body: bytes) -> dict[str, Any]:
        wrapper = command.lower() + "response"
        try:
            doc = strict_json(body)
        except (ValueError, RecursionError):  # not JSON, or a non-finite number
            doc = None
        inner = doc.get(wrapper) if isinstance(doc, dict) else None
        status = response.status_code
        text = inner.get("errortext") if isinstance(inner, dict) else None
        code = inner.get("errorcode") if isinstance(inner, dict) else None
        refused = _refusal(command, code if isinstance(code, int) else status, text)
        if refused is not None:
            raise refused
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

    async def list_page(
        self, page: int, pagesize: int, start: str | None, end: str | None, **filters: Any
    ) -> tuple[int, list[dict[str, Any]]]:
        """One page of listEvents: the window's count and its rows (newest first)."""
        inner = await self.call(
            "listEvents", listall="true", page=page, pagesize=pagesize,
            startdate=start, enddate=end, **filters,
        )  # fmt: skip
        batch = inner.get("event", [])  # absent past the end and for an empty window
        total = inner.get("count", 0)
        if not isinstance(batch, list) or not isinstance(total, int):
            raise ApiUnavailable("CloudStack API answered listEvents with a malformed page")
        return total, [e for e in batch if isinstance(e, dict) and isinstance(e.get("id"), str)]


def _refusal(command: str, code: int, text: str | None) -> ApiRefused | None:
    """CloudStack's error codes that retrying will not fix (ApiErrorCode.java)."""
    if code == 401:
        return ApiRefused(
            f"CloudStack refused the API key or signature (401: {text or 'unauthorised'});"
            " check cloudstack.api_key and cloudstack.secret_key ('csnotify config show')"
        )
    if code == 432:
        return ApiRefused(
            f"CloudStack does not allow {command} for this API key"
            f" (432: {text or 'unsupported'}); give the account's role permission for"
            f" {command}, or use the keys of an account that may call it"
        )
    if code == 531:
        return ApiRefused(
            f"CloudStack denied permission for {command} (531: {text or 'permission denied'});"
            " use the keys of an account that may see these events (listall needs an admin)"
        )
    if code == 431:
        if text and "page size" in text.lower():
            match = _PAGE_LIMIT.search(text)
            return PageSizeTooLarge(
                f"CloudStack refused the page size (431: {text})",
                int(match.group(1)) if match else None,
            )
        return ApiRefused(f"CloudStack rejected a parameter of {command} (431: {text})")
    return None


# -- listEvents, read completely --------------------------------------------------------

MAX_ROUNDS = 30  # full re-reads of one over-full second before leaving it to the next poll


def created_utc(row: dict[str, Any]) -> datetime:
    """A row's ``created`` as UTC, whole seconds (unreadable ones sort as the oldest)."""
    try:
        return datetime.strptime(row["created"], "%Y-%m-%dT%H:%M:%S%z").astimezone(UTC)
    except (KeyError, TypeError, ValueError):
        return datetime.min.replace(tzinfo=UTC)


@dataclass
class Window:
    """What one read of a window found: every row (by id); the oldest second that could
    not be read completely (a cursor must not move past it: rows up to it may be handed
    on, newer ones wait for the next read); how many counted rows never came back."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    incomplete: datetime | None = None
    short: int = 0

    def newest_first(self) -> list[dict[str, Any]]:
        return sorted(self.rows.values(), key=created_utc, reverse=True)


@dataclass
class EventReader:
    """Reads every listEvents row of a window although CloudStack orders only by
    ``created`` (server/src/main/java/com/cloud/api/query/QueryManagerImpl.java
    searchForEvents: ``createDate`` descending, no second key), so rows of one second come
    back in any order from one ``page`` query to the next.

    The window is walked newest first by moving ``enddate`` down to the oldest second of
    each page (that second is read again, whole, as the newest of the next window), so
    shuffled ties and events arriving meanwhile cannot hide a row. A second with more rows
    than a page is read with ``page`` numbers, over and over, until the ids received match
    the server's ``count``. A 431 on ``pagesize`` lowers the page size to the limit the
    server states and goes on."""

    client: CloudStackClient
    clock: ServerClock
    pagesize: int = PAGE_SIZE
    rounds: int = MAX_ROUNDS
    pages: int = 0  # pages asked for in this read (cloudstack.max_pages)

    async def page(
        self, number: int, start: str | None, end: str | None, filters: dict[str, Any]
    ) -> tuple[int, list[dict[str, Any]]]:
        self.pages += 1
        if self.pages > self.client.creds.max_pages:
            raise ApiUnavailable(
                f"listEvents needed more than {self.client.creds.max_pages} pages in one read"
                " (cloudstack.max_pages); a server that never ends its pages is refused. If the"
                " backlog is real, raise cloudstack.max_pages or start later with --since"
            )
        while True:
            try:
                return await self.client.list_page(number, self.pagesize, start, end, **filters)
            except PageSizeTooLarge as exc:
                lower = exc.limit if exc.limit and exc.limit < self.pagesize else self.pagesize // 2
                if lower < 1:
                    raise
                self.pagesize = lower

    async def learn_zone(self) -> None:
        """With no zone known yet, the newest event's offset is the best first guess."""
        if not self.clock.known:
            _, rows = await self.page(1, None, None, {})
            self.clock.learn(rows)

    async def read(
        self,
        start: datetime | None,
        end: datetime,
        filters: dict[str, Any] | None = None,
        known: dict[datetime, set[str]] | None = None,
        enough: int | None = None,
    ) -> Window:
        """Every row created from ``start`` to ``end`` (UTC, inclusive; the server may add
        rows just outside). ``known``: ids already handled at a second, which count as
        read there. ``enough``: stop once that many newest rows are complete."""
        self.pages = 0
        await self.learn_zone()
        known = known or {}
        at_start = known.get(start, set()) if start else set()
        # With no handled ids to check the server's reading against, a start in the night
        # hours goes an hour early (see ``_read_late``).
        back = start is not None and not at_start and self.clock.unsure(start)
        window = Window()
        for _ in range(3):
            used = self.clock.start_offset()
            window = await self._walk(start, end, filters or {}, known, enough, back)
            smallest = self.clock.learn(window.newest_first())
            if self.clock.zone is None and smallest is not None and smallest < used:
                # The server used a smaller offset than ours (a DST change we had not seen):
                # our startdate may have been read late. Read again with that offset.
                self.clock.offset = smallest
                continue
            if not back and self._read_late(at_start, window):
                back = True
                continue
            if window.short and window.incomplete is None and enough is None:
                continue  # rows counted but not received: read the window again
            break
        return window

    def _read_late(self, at_start: set[str], window: Window) -> bool:
        """The ids already handled at the start second did not come back: the server read
        our startdate later than meant. With a learned offset that happens when the zone
        left DST unseen and the start fell in the repeated hour, which CloudStack reads as
        its second pass (ParamProcessWorker: a SimpleDateFormat in the JVM zone)."""
        return self.clock.zone is None and bool(at_start) and not at_start & window.rows.keys()

    async def _walk(
        self,
        start: datetime | None,
        end: datetime,
        filters: dict[str, Any],
        known: dict[datetime, set[str]],
        enough: int | None,
        back: bool = False,
    ) -> Window:
        window = Window()
        first = self.clock.start(start, back) if start else None
        upper, total = end, None
        while start is None or upper >= start:
            count, batch = await self.page(1, first, self.clock.end(upper), filters)
            total = count if total is None else total
            window.rows.update((r["id"], r) for r in batch)
            if len(batch) < self.pagesize:
                break  # the whole rest of the window fitted in this page
            oldest = min(created_utc(r) for r in batch)
            newest = max(created_utc(r) for r in batch)
            if enough and sum(created_utc(r) > oldest for r in window.rows.values()) >= enough:
                break
            if oldest < newest and oldest < upper:
                upper = oldest  # read the oldest (perhaps cut) second again, whole
                continue
            # One second fills the page: a burst bigger than a page.
            if not await self._second(oldest, window, filters, known.get(oldest, set())):
                window.incomplete = oldest if window.incomplete is None else window.incomplete
            upper = oldest - timedelta(seconds=1)
        window.short = max(0, (total or 0) - len(window.rows))
        return window

    async def _second(
        self, second: datetime, window: Window, filters: dict[str, Any], known: set[str]
    ) -> bool:
        start, end = self.clock.start(second), self.clock.end(second)
        seen = set(known)
        for _ in range(self.rounds):
            number = 1
            while True:
                count, batch = await self.page(number, start, end, filters)
                window.rows.update((r["id"], r) for r in batch)
                seen.update(r["id"] for r in batch)
                if len(seen) >= count:
                    return True
                if len(batch) < self.pagesize:
                    break
                number += 1
        return False


async def recent_events(
    client: CloudStackClient,
    start: datetime | None,
    end: datetime | None,
    filters: dict[str, Any],
    limit: int,
) -> list[dict[str, Any]]:
    """The newest ``limit`` rows created from ``start`` to ``end`` (UTC; ``end`` default
    now), exactly: the server's zone only decides what is asked, our filter what is kept."""
    end = end or datetime.now(UTC)
    reader = EventReader(client, client.creds.clock(), client.creds.page_size)
    window = await reader.read(start, end, filters, enough=limit)
    first = start.replace(microsecond=0) if start else datetime.min.replace(tzinfo=UTC)
    return [r for r in window.newest_first() if first <= created_utc(r) <= end][:limit]
