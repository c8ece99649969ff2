"""Hide secrets in what we show: signing keys, passwords in URIs, query values, token-like
path segments (Slack's and Discord's webhook URLs carry their secret there), credential
arguments of ``cmd:`` endpoints, and the private parts of Apprise URIs (tokens, webhook
ids, signatures) as Apprise itself marks them in its privacy form of the URL."""

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


# Query parameters that address or shape a message rather than authorise it: shown.
# Every other value is masked (``?code=``, ``?sig=``, ``?apikey=`` ... all look alike).
PUBLIC_PARAMS = frozenset(
    {"to", "cc", "bcc", "from", "name", "format", "mode", "verify", "no_verify_ssl",
     "priority", "overflow", "region", "topic", "channel", "lang", "redirect"}
)  # fmt: skip
# A path segment this long, of letters and digits both, is taken for a token.
_TOKEN = re.compile(r"(?=[^/]*[A-Za-z])(?=[^/]*[0-9])[A-Za-z0-9_\-.~+=%]{16,}")
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()]+")
# cmd: arguments: --password X, --token=X, API_KEY=X, -u user:pass, --user=user:pass,
# -H 'Authorization: Bearer X' (a header whose name looks like a credential's)
_SECRET_FLAG = re.compile(r"^-{1,2}[\w-]*(pass|secret|token|key|auth|cred)[\w-]*$", re.I)
_USER_FLAG = ("-u", "--user")
# Clients that take the password glued to -p (-pSECRET): MySQL's and MariaDB's
_PASSWORD_GLUED = ("mysql", "mariadb")
_HEADER_ARG = re.compile(r"^([A-Za-z][\w-]*):(?!//)(\s*)\S")
_SECRET_HEADER = re.compile(r"(pass|secret|token|key|auth|cred|cookie|sig)", re.IGNORECASE)


def mask_uri(uri: str) -> str:
    """The URI with its secrets masked: what Apprise calls private for an Apprise URI, then
    the password of the user part, query values and token-like path segments of any URI,
    and credential-like arguments of a ``cmd:`` endpoint."""
    if uri.startswith("cmd:"):
        return mask_command(uri)
    scheme = uri.split(":", 1)[0].lower()
    if scheme not in NOT_APPRISE and "://" in uri:
        uri = _mask_apprise(uri)
    return _mask_generic(uri)


_USERINFO = re.compile(r"(//[^/?#@:]*):[^/?#]*@")  # //user:password@


def _mask_generic(uri: str) -> str:
    try:
        parts = urlsplit(uri)
    except ValueError:  # not parseable (a broken IPv6 host): mask what looks secret anyway
        head, sep, _query = _USERINFO.sub(rf"\1:{MASK}@", uri).partition("?")
        return head + (f"?{MASK}" if sep else "")
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        user = MASK if _TOKEN.fullmatch(user) else user
        netloc = f"{user}:{MASK}@{host}" if sep else f"{user}@{host}"
    path = "/".join(MASK if _TOKEN.fullmatch(seg) else seg for seg in parts.path.split("/"))
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, v if k.lower() in PUBLIC_PARAMS or not v else MASK) for k, v in pairs],
            safe="*@:/",
        )
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def mask_command(uri: str) -> str:
    """``cmd:/bin/hook -u user:pass --token=abc API_KEY=xyz https://u:p@h/`` with the
    password, the token, the key and the URL's secrets masked; the rest as written."""
    import shlex

    try:
        argv = shlex.split(uri[len("cmd:") :])
    except ValueError:
        return "cmd:" + MASK
    shown = [
        _mask_argument(previous, arg) for previous, arg in zip(["", *argv], argv, strict=False)
    ]
    if argv and argv[0].rsplit("/", 1)[-1].startswith(_PASSWORD_GLUED):  # mysql -pSECRET
        shown = [f"-p{MASK}" if a.startswith("-p") and len(a) > 2 else a for a in shown]
    if shown == argv:
        return uri
    return "cmd:" + " ".join(
        shlex.quote(a.replace(MASK, "MASKED")).replace("MASKED", MASK) for a in shown
    )


def _mask_argument(previous: str, arg: str) -> str:
    name, eq, value = arg.partition("=")
    if previous in _USER_FLAG and ":" in arg:
        return arg.partition(":")[0] + ":" + MASK
    if eq and name in _USER_FLAG and ":" in value:
        return f"{name}={value.partition(':')[0]}:{MASK}"
    header = _HEADER_ARG.match(arg)
    if header and _SECRET_HEADER.search(header.group(1)):
        return f"{header.group(1)}:{header.group(2)}{MASK}"
    if _SECRET_FLAG.match(previous) and "=" not in previous:
        return MASK
    if eq and value and (_SECRET_FLAG.match(name) or _SECRET_PARAM.search(name)):
        return f"{name}={MASK}"
    return mask_text(arg) if "://" in arg else arg


def mask_text(text: str) -> str:
    """Free text (an error message, a log line) with the secrets of every URL in it
    masked, without Apprise (log lines are many; an Apprise URI's own masking happens
    where the URI is named)."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: _mask_generic(m.group()), text)


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
