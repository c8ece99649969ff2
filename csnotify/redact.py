"""Hide secrets in what we show: signing keys, passwords in URIs, token-like query values."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "********"
_SECRET_PARAM = re.compile(r"(pass|secret|token|key|auth|sig)", re.IGNORECASE)


def mask_uri(uri: str) -> str:
    """The URI with the password of its user part and secret-looking query values masked."""
    if uri.startswith("cmd:"):
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if sep else netloc
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, MASK if _SECRET_PARAM.search(k) and v else v) for k, v in pairs], safe="*@:/"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_key(key: str | None) -> str | None:
    return MASK if key else None
