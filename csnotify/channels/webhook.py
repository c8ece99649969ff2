"""Native webhooks: a JSON POST per event, signed the Standard Webhooks way (or the way
CloudStack 4.20's own webhooks sign, with ``--format cloudstack``).

The transport is csnotify.channels.http, a lean HTTP/1.1 client (bench/throughput.py
measures it beside aiohttp and httpx). Redirects are not followed, no more than
``BODY_CAP`` bytes of a response are kept, and a 2xx answer counts only once its body has
ended (within ``BODY_WAIT_S``): a delivery cut short is not known to have landed.
"""

from __future__ import annotations

import json
import re
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from csnotify import __version__
from csnotify.channels.base import Attempt, Message
from csnotify.channels.http import CutShort, HTTPFailure, Response
from csnotify.events import CLOUDEVENTS_PREFIX, cloudstack_description
from csnotify.signing import cloudstack_webhook_signature, standard_signature

if TYPE_CHECKING:
    from csnotify.channels.http import Client

USER_AGENT = f"csnotify/{__version__}"
BODY_CAP = 64 * 1024
BODY_WAIT_S = 2.0  # for the body, once the status and headers came
RETRYABLE_4XX = (408, 429)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def body_and_headers(message: Message) -> tuple[bytes, dict[str, str]]:
    """The request body and the headers that do not change between attempts."""
    event, sub = message.event, message.subscription
    if sub.format == "cloudstack":
        body = cloudstack_description(event).encode()
        headers = {
            "Content-Type": "application/json; charset=UTF-8",
            # WebhookDeliveryThread.updateRequestHeaders: "CS-Hookshot/" + the event's
            # resource account UUID, nothing else
            "User-Agent": f"CS-Hookshot/{event.account_id or ''}",
            "X-CS-Event-ID": event.id,
            "X-CS-Event": event.type,
        }
        if sub.key:
            headers["X-CS-Signature"] = cloudstack_webhook_signature(sub.key, body)
        return body, {name: header_value(value) for name, value in headers.items()}
    if sub.format == "cloudevents":
        doc: dict[str, Any] = {
            "specversion": "1.0",
            "id": event.id,
            "source": f"/cloudstack/{event.category}",
            "type": CLOUDEVENTS_PREFIX + event.type,
            "time": event.created,
            "datacontenttype": "application/json",
            "data": event.as_json(),
        }
        if event.resource_id:
            doc["subject"] = event.resource_id
        body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        return body, {"Content-Type": "application/cloudevents+json", "User-Agent": USER_AGENT}
    # {"event": <event>, "subscription": NAME}, reusing the event's one serialisation
    name = json.dumps(sub.name, ensure_ascii=False)
    body = f'{{"event":{event.json_text()},"subscription":{name}}}'.encode()
    return body, {"Content-Type": "application/json", "User-Agent": USER_AGENT}


def header_value(value: str) -> str:
    """An event field bound for a header, with control characters (CR, LF, ...) made
    spaces: a header cannot hold them, and they would split it into two."""
    return _CONTROL.sub(" ", value)


def signed_headers(message: Message, body: bytes, now: float | None = None) -> dict[str, str]:
    """Standard Webhooks headers for one attempt (the timestamp is the attempt's)."""
    if not message.subscription.key or message.subscription.format == "cloudstack":
        return {}
    msg_id = message.webhook_id
    timestamp = int(now if now is not None else time.time())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(message.subscription.key, msg_id, timestamp, body),
    }


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class WebhookChannel:
    def __init__(self, client: Client) -> None:
        self.client = client

    async def send(self, message: Message, timeout: float) -> Attempt:
        body, headers = body_and_headers(message)
        headers.update(signed_headers(message, body))
        try:
            response = await self.client.post(
                message.uri, body, headers, timeout, body_timeout=BODY_WAIT_S,
                address=message.address,
            )  # fmt: skip
        except TimeoutError:
            return Attempt.failed(f"timed out after {timeout:g} s")
        except CutShort as exc:
            if exc.status is None or 200 <= exc.status < 300:
                return Attempt.failed(str(exc))
            response = Response(exc.status, exc.headers, b"")  # its body was only an excerpt
        except HTTPFailure as exc:
            return Attempt.failed(str(exc))
        status = response.status
        if 200 <= status < 300:
            return Attempt(ok=True, status=status)
        excerpt = " ".join(response.body[:200].decode("utf-8", "replace").split())
        reason = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
        if 300 <= status < 400:
            return Attempt.failed(f"{reason} (redirects are not followed)", False, status)
        attempt = Attempt.failed(
            reason, retryable=status >= 500 or status in RETRYABLE_4XX, status=status
        )
        attempt.retry_after = retry_after_seconds(response.headers.get("retry-after"))
        attempt.gone = status == 410
        return attempt

    async def close(self) -> None:
        await self.client.close()
