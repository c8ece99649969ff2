"""Signatures: Standard Webhooks (what csnotify sends), CloudStack 4.20 webhooks
(``--format cloudstack``) and CloudStack API requests (HMAC-SHA1, for the API source).

Standard Webhooks: ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``.
A key written ``whsec_<base64>`` is used as the decoded bytes, as Standard Webhooks
libraries read it; any other key is used as its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from csnotify.errors import BadInput

WHSEC = "whsec_"
KEY_BYTES = 24
MAX_KEY = 1024


def generate_key() -> str:
    return WHSEC + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


@functools.lru_cache(maxsize=1024)  # one decode per key, not per delivery
def key_bytes(key: str) -> bytes:
    if key.startswith(WHSEC):
        return base64.b64decode(key[len(WHSEC) :], validate=True)
    return key.encode()


def validate_key(key: str) -> str:
    if not key or key != key.strip():
        raise BadInput(
            "the signing key is empty or has leading/trailing spaces; use --key generate"
        )
    if len(key) > MAX_KEY:
        raise BadInput(f"the signing key is longer than {MAX_KEY} characters")
    if key.startswith(WHSEC):
        try:
            raw = key_bytes(key)
        except (binascii.Error, ValueError):
            raise BadInput(
                "the signing key starts with whsec_ but the rest is not base64;"
                " give the key exactly as issued, or use --key generate"
            ) from None
        if not raw:
            raise BadInput("the whsec_ signing key is empty; use --key generate")
    return key


def whsec_form(key: str) -> str:
    """The key as Standard Webhooks libraries take it."""
    if key.startswith(WHSEC):
        return key
    return WHSEC + base64.b64encode(key.encode()).decode()


def standard_signature(key: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.digest(key_bytes(key), signed, "sha256")).decode()


def cloudstack_webhook_signature(key: str, body: bytes) -> str:
    """``X-CS-Signature`` as CloudStack 4.20 sends it: Base64(HMAC-SHA256(key, body))."""
    return base64.b64encode(hmac.digest(key.encode(), body, "sha256")).decode()


@dataclass
class Verified:
    scheme: str  # "standard-webhooks" | "cloudstack"
    msg_id: str | None
    timestamp: int | None


def verify(
    key: str,
    headers: dict[str, str],
    body: bytes,
    tolerance: float = 300,
    now: float | None = None,
) -> Verified:
    """Check a delivery's signature; raises ``SignatureMismatch`` saying why not."""
    lower = {k.strip().lower(): v.strip() for k, v in headers.items()}
    if "webhook-signature" in lower:
        return _verify_standard(key, lower, body, tolerance, now)
    if "x-cs-signature" in lower:
        expected = cloudstack_webhook_signature(key, body)
        if not hmac.compare_digest(expected, lower["x-cs-signature"]):
            raise SignatureMismatch("X-CS-Signature does not match the body and key")
        return Verified("cloudstack", lower.get("x-cs-event-id"), None)
    raise SignatureMismatch("no webhook-signature or X-CS-Signature header")


def _verify_standard(
    key: str, headers: dict[str, str], body: bytes, tolerance: float, now: float | None
) -> Verified:
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    if not msg_id or not stamp:
        raise SignatureMismatch("webhook-id or webhook-timestamp header missing")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureMismatch(f"webhook-timestamp {stamp!r} is not a number") from None
    current = time.time() if now is None else now
    if tolerance and abs(current - timestamp) > tolerance:
        raise SignatureMismatch(
            f"webhook-timestamp is {int(current - timestamp)} s off (tolerance {tolerance:g} s)"
        )
    try:
        expected = standard_signature(key, msg_id, timestamp, body).split(",", 1)[1]
    except (binascii.Error, ValueError):
        raise SignatureMismatch("the key is not a valid whsec_ key") from None
    for candidate in headers["webhook-signature"].split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return Verified("standard-webhooks", msg_id, timestamp)
    raise SignatureMismatch("webhook-signature does not match the body and key")


class SignatureMismatch(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_header_lines(text: str) -> dict[str, str]:
    """``Name: value`` lines (an HTTP request head is fine: its first line is skipped)."""
    headers = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() and " " not in name.strip():
            headers[name.strip()] = value.strip()
    return headers


# -- CloudStack API requests (ApiServer.verifyRequest) --------------------------------------

# Java's URLEncoder keeps A-Z a-z 0-9 . - * _ and turns space into '+', which CloudStack's
# clients then write as %20; '~' is encoded.
_JAVA_SAFE = "-_.*"


def java_urlencode(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe=_JAVA_SAFE).replace("~", "%7E")


def api_query(params: dict[str, str]) -> str:
    """``name=value`` pairs sorted by name (case-sensitively), values encoded as Java does."""
    return "&".join(f"{name}={java_urlencode(params[name])}" for name in sorted(params))


def api_signature(params: dict[str, str], secret_key: str) -> str:
    """Base64 HMAC-SHA1 of the sorted, lower-cased query, as CloudStack verifies it."""
    to_sign = api_query({k: v for k, v in params.items() if k != "signature"}).lower()
    digest = hmac.new(secret_key.encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signed_api_query(params: dict[str, str], secret_key: str) -> str:
    return api_query(params) + "&signature=" + java_urlencode(api_signature(params, secret_key))
