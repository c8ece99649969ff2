"""Hide secrets in what we show: signing keys, passwords in URIs, token-like query values,
and the private parts of Apprise URIs (tokens, webhook ids, signatures) as Apprise itself
marks them in its privacy form of the URL."""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

MASK = "********"
_SECRET_PARAM = re.compile(r"(pass|secret|token|key|auth|sig)", re.IGNORECASE)
_URL_DELIMITERS = re.compile(r"[/?&=@:#]")
# Schemes of URLs that are not Apprise endpoints (webhooks, the broker): masking them needs
# no Apprise, whose import costs about 20 MB and 0.2 s (listen masks amqp.url in its logs).
NOT_APPRISE = ("http", "https", "amqp", "amqps")


def mask_uri(uri: str) -> str:
    """The URI with its secrets masked: what Apprise calls private for an Apprise URI, then
    the password of the user part and secret-looking query values of any URI."""
    if uri.startswith("cmd:"):
        return uri
    scheme = uri.split(":", 1)[0].lower()
    if scheme not in NOT_APPRISE and "://" in uri:
        uri = _mask_apprise(uri)
    return _mask_generic(uri)


def _mask_generic(uri: str) -> str:
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


@lru_cache(maxsize=1024)
def _mask_apprise(uri: str) -> str:
    """Apprise's plugin for the URI knows which of its parts are private: they are the
    parts its ``url(privacy=True)`` shows shortened. Those values are masked where they
    stand in the URI as the user wrote it; when they cannot be found there, Apprise's
    privacy form itself is shown."""
    import apprise

    plugin = apprise.Apprise.instantiate(uri, suppress_exceptions=True)
    if plugin is None:  # not a URI Apprise can use: it was refused when it was given
        return uri
    private = plugin.url(privacy=True)
    public = _URL_DELIMITERS.split(plugin.url(privacy=False))
    shown = _URL_DELIMITERS.split(private)
    if len(public) != len(shown):
        return private
    secrets = {unquote(p) for p, s in zip(public, shown, strict=True) if unquote(p) != unquote(s)}
    masked = uri
    for secret in sorted(secrets, key=len, reverse=True):
        for form in (secret, quote(secret, safe=""), quote(secret)):
            masked = masked.replace(form, MASK) if form else masked
    if any(secret and secret in unquote(masked) for secret in secrets):
        return private
    return masked


def mask_key(key: str | None) -> str | None:
    return MASK if key else None
