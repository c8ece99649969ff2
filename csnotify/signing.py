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
import math
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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


VERIFY_HINT = "give the key the subscription signs with ('csnotify show NAME --reveal')"


def validate_key(key: str, hint: str = "use --key generate") -> str:
    """``hint``: what to do instead (subscribe: generate one; verify: the one in use)."""
    if not key or key != key.strip():
        raise BadInput(f"the signing key is empty or has leading/trailing spaces; {hint}")
    if len(key) > MAX_KEY:
        raise BadInput(f"the signing key is longer than {MAX_KEY} characters")
    if key.startswith(WHSEC):
        try:
            raw = key_bytes(key)
        except (binascii.Error, ValueError):
            raise BadInput(
                "the signing key starts with whsec_ but the rest is not base64;"
                f" give the key exactly as issued, or {hint.removeprefix('give ')}"
            ) from None
        if not raw:
            raise BadInput(f"the whsec_ signing key is empty; {hint}")
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


SCHEMES = ("standard", "cloudstack")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def verify(
    key: str,
    headers: dict[str, str],
    body: bytes,
    tolerance: float = 300,
    now: float | None = None,
    scheme: str = "standard",
) -> Verified:
    """Check a delivery's signature; raises ``SignatureMismatch`` saying why not, and
    ``BadInput`` for a key or tolerance that cannot verify anything (an empty key would
    accept a signature anyone can make).

    ``X-CS-Signature`` is checked only with ``scheme="cloudstack"``: it signs the body
    alone, so a captured Standard Webhooks delivery (same key) could otherwise be
    replayed as one forever."""
    validate_key(key, VERIFY_HINT)
    if not math.isfinite(tolerance) or tolerance < 0:
        raise BadInput(f"--tolerance {tolerance!r}: give a number of seconds, 0 or more")
    if scheme not in SCHEMES:
        raise BadInput(f"--scheme {scheme!r}: use standard or cloudstack")
    lower = {k.strip().lower(): v.strip() for k, v in headers.items()}
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature", "x-cs-signature"):
        if not _utf8(lower.get(name, "")):  # bytes from argv or a file that are not text
            raise SignatureMismatch(f"the {name} header is not UTF-8 text")
    if scheme == "cloudstack":
        if "x-cs-signature" not in lower:
            raise SignatureMismatch("no X-CS-Signature header")
        expected = cloudstack_webhook_signature(key, body)
        if not _same(expected, lower["x-cs-signature"]):
            raise SignatureMismatch("X-CS-Signature does not match the body and key")
        return Verified("cloudstack", lower.get("x-cs-event-id"), None)
    if "webhook-signature" in lower:
        return _verify_standard(key, lower, body, tolerance, now)
    if "x-cs-signature" in lower:
        raise SignatureMismatch(
            "no webhook-signature header (X-CS-Signature is checked only with --scheme cloudstack)"
        )
    raise SignatureMismatch("no webhook-signature header")


def _utf8(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate: an undecodable byte kept by the reader
        return False
    return True


def _same(expected: str, given: str) -> bool:
    """Constant-time, as bytes: a non-ASCII signature is simply not equal."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape"))


def _verify_standard(
    key: str, headers: dict[str, str], body: bytes, tolerance: float, now: float | None
) -> Verified:
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    if not msg_id or not stamp:
        raise SignatureMismatch("webhook-id or webhook-timestamp header missing")
    if not _TIMESTAMP.fullmatch(stamp):
        raise SignatureMismatch(f"webhook-timestamp {stamp!r} is not 1-12 digits of unix time")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if tolerance and abs(current - timestamp) > tolerance:
        raise SignatureMismatch(
            f"webhook-timestamp is {int(current - timestamp)} s off (tolerance {tolerance:g} s)"
        )
    expected = standard_signature(key, msg_id, timestamp, body).split(",", 1)[1]
    for candidate in headers["webhook-signature"].split():
        version, _, value = candidate.partition(",")
        if version == "v1" and _same(expected, value):
            return Verified("standard-webhooks", msg_id, timestamp)
    raise SignatureMismatch("webhook-signature does not match the body and key")


class SignatureMismatch(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def remember_id(path: Path, verified: Verified, tolerance: float, now: float | None = None) -> None:
    """Refuse a ``webhook-id`` already verified (a replay), else record it in ``path``
    (lines of ``TIMESTAMP ID``, under an exclusive lock for concurrent receivers). Ids
    whose timestamps are past the tolerance are dropped: the timestamp check refuses them."""
    import fcntl

    if not verified.msg_id:
        raise SignatureMismatch("--seen needs a webhook-id (Standard Webhooks deliveries)")
    current = time.time() if now is None else now
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise BadInput(f"--seen {path}: {exc.strerror}") from None
    with os.fdopen(fd, "r+", encoding="utf-8", errors="surrogateescape") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        kept = []
        for line in f.read().splitlines():
            stamp, _, msg_id = line.partition(" ")
            if msg_id == verified.msg_id:
                raise SignatureMismatch(f"webhook-id {msg_id} was already verified (a replay)")
            if stamp.isdigit() and (not tolerance or current - int(stamp) <= tolerance):
                kept.append(line)
        kept.append(f"{verified.timestamp or int(current)} {verified.msg_id}")
        f.seek(0)
        f.truncate()
        f.write("\n".join(kept) + "\n")


def parse_header_lines(text: str, strict: bool = False) -> dict[str, str]:
    """``Name: value`` lines (an HTTP request head is fine: its first line is skipped).
    With ``strict`` (headers given one by one, -H), a line that is not one is refused."""
    headers = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() and " " not in name.strip():
            headers[name.strip()] = value.strip()
        elif strict:
            raise BadInput(f"-H {line!r}: give a header as 'Name: value'")
    return headers


# -- CloudStack API requests (ApiServer.verifyRequest) --------------------------------------

# Java's URLEncoder keeps A-Z a-z 0-9 . - * _ and turns space into '+', which CloudStack's
# clients then write as %20; '~' is encoded.
_JAVA_SAFE = "-_.*"


def go_query_escape(value: str) -> str:
    """Go's ``url.QueryEscape`` as CloudMonkey signs with it (cmd/network.go,
    ``encodeRequestParams``: '+' written %20, '*' kept): Java's encoding but for '~',
    which Go keeps."""
    from urllib.parse import quote

    return quote(value, safe=_JAVA_SAFE)


def java_urlencode(value: str) -> str:
    return go_query_escape(value).replace("~", "%7E")


def api_query(params: dict[str, str], encode: Callable[[str], str] = java_urlencode) -> str:
    """``name=value`` pairs sorted by name (case-sensitively), values encoded as Java does
    (or by ``encode``)."""
    return "&".join(f"{name}={encode(params[name])}" for name in sorted(params))


def api_signature(
    params: dict[str, str], secret_key: str, encode: Callable[[str], str] = java_urlencode
) -> str:
    """Base64 HMAC-SHA1 of the sorted, lower-cased query, as CloudStack verifies it."""
    to_sign = api_query({k: v for k, v in params.items() if k != "signature"}, encode).lower()
    digest = hmac.new(secret_key.encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signed_api_query(params: dict[str, str], secret_key: str) -> str:
    return api_query(params) + "&signature=" + java_urlencode(api_signature(params, secret_key))
