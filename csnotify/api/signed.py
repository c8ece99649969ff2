"""CloudStack-signed requests: a CloudStack user calls the API with the keys it already
holds, signing the request as CloudStack API requests are signed (ApiServer.verifyRequest,
server/src/main/java/com/cloud/api/ApiServer.java): every parameter but ``signature``,
sorted by name, values URL-encoded, the whole lower-cased, HMAC-SHA1 with the user's
secret key, base64 (csnotify/signing.py ``api_signature``, the same rules the ``cs``
client and CloudMonkey sign with). Only ``signatureVersion=3`` with ``expires`` is taken.

Two kinds of request are signed. At ``/client/api`` (commands.py) the request is a
CloudStack API call: every parameter of the query or POSTed form is signed, ``command``
among them, as CloudMonkey (``cmk``) and the ``cs`` client send it. Under ``/v1`` the
parameters are the query's, plus two the server sets from the request so that a
signature covers the operation and its body: ``command`` = ``"METHOD /path"`` and, when
there is a body, ``bodysha256`` = its SHA-256 in hex; there the credentials come in the
query (``apiKey``, ``signatureVersion``, ``expires``, ``signature``) or in headers
(``X-CS-ApiKey``, ``X-CS-Expires``, ``X-CS-Signature``; version 3 implied). The names of
those four are read without regard to case, as ApiServer.verifyRequest reads them
(CloudMonkey sends ``signatureversion``).

The user is found with the admin keys csnotify holds (cloudstack.api_key): ``getUser``
by its API key, ``getUserKeys`` for its secret key, ``listDomains`` for its domain's
path; the answer is kept ``api.auth_cache_ttl`` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from csnotify.cloudstack import ApiRefused
from csnotify.errors import CsnotifyError
from csnotify.signing import api_signature, go_query_escape
from csnotify.tokens import Caller

if TYPE_CHECKING:
    from collections.abc import Mapping

    from csnotify.cloudstack import CloudStackClient

HEADERS = {"x-cs-apikey": "apiKey", "x-cs-expires": "expires", "x-cs-signature": "signature"}
# com.cloud.user.Account.Type: 1 root admin, 2 domain admin; the others act for themselves
SCOPE_OF_ACCOUNT_TYPE = {1: "global", 2: "domain"}


# ApiServlet's answer when ApiServer.verifyRequest fails (server/src/main/java/com/cloud/
# api/ApiServlet.java)
NOT_VERIFIED = "unable to verify user credentials and/or request signature"


class Unauthorized(CsnotifyError):
    """The request's credentials were refused (the API answers 401)."""


@dataclass
class Known:
    secret: str | None  # None: no such API key
    caller: Caller | None
    fetched: float


def value(params: Mapping[str, str], name: str) -> str | None:
    """A credential parameter, its name compared without case (ApiServer.verifyRequest:
    ``equalsIgnoreCase`` for apiKey, signature, signatureVersion and expires)."""
    wanted = name.lower()
    return next((v for k, v in params.items() if k.lower() == wanted), None)


def credentials(query: Mapping[str, str], headers: Mapping[str, str]) -> dict[str, str] | None:
    """The signed parameters of a request (query and header forms), or None when it
    carries no CloudStack credentials at all."""
    params = dict(query)
    for header, name in HEADERS.items():
        if header in headers:
            params[name] = headers[header]
            if value(params, "signatureVersion") is None:
                params["signatureVersion"] = "3"
    signed = value(params, "apiKey") is not None or value(params, "signature") is not None
    return params if signed else None


def check_expiry(params: Mapping[str, str], now: datetime) -> None:
    """signatureVersion 3 with ``expires`` in the future. CloudStack parses it with
    ``yyyy-MM-dd'T'HH:mm:ssZ``; CloudMonkey sends RFC 3339 (``...T12:00:00Z``), which is
    taken too."""
    when = value(params, "expires")
    if value(params, "signatureVersion") != "3" or when is None:
        raise Unauthorized(
            "sign with signatureVersion=3 and expires (as CloudStack API requests are signed)"
        )
    try:
        expires = datetime.strptime(when, "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        raise Unauthorized(
            f"expires {when!r}: use yyyy-MM-ddTHH:mm:ss+0000, as CloudStack does"
        ) from None
    if expires < now:
        raise Unauthorized("the signed request has expired; sign it again")


def signature_matches(signed: dict[str, str], secret: str, signature: str) -> bool:
    """The signature CloudStack computes over ``signed`` (every parameter but
    ``signature``) and, when a value holds '~', the one CloudMonkey computes: the same
    secret signs both, so taking either lets cmk send a regular expression with '~'."""
    if hmac.compare_digest(api_signature(signed, secret).encode(), signature.encode()):
        return True
    if any("~" in v for v in signed.values()):
        alternative = api_signature(signed, secret, encode=go_query_escape)
        return hmac.compare_digest(alternative.encode(), signature.encode())
    return False


def signed_params(params: dict[str, str], method: str, path: str, body: bytes) -> dict[str, str]:
    out = {**params, "command": f"{method} {path}"}
    if body:
        out["bodysha256"] = hashlib.sha256(body).hexdigest()
    return out


class CloudStackAuth:
    def __init__(self, client: CloudStackClient, ttl: float) -> None:
        self.client = client
        self.ttl = ttl
        self.known: dict[str, Known] = {}
        # look-ups in flight, by API key: requests that come together with a key not yet
        # known wait for the one look-up instead of each asking CloudStack again
        self.pending: dict[str, asyncio.Future[Known]] = {}

    async def caller(self, params: dict[str, str], signed: dict[str, str]) -> Caller:
        """The user whose keys signed ``signed`` (the parameters the signature covers);
        ``params`` holds the credentials."""
        check_expiry(params, datetime.now(UTC))
        api_key, signature = value(params, "apiKey") or "", value(params, "signature") or ""
        if not api_key or not signature:
            raise Unauthorized("a signed request needs apiKey and signature")
        known = await self.lookup(api_key)
        if known.secret is None or known.caller is None:
            raise Unauthorized(NOT_VERIFIED)
        unsigned = {k: v for k, v in signed.items() if k.lower() != "signature"}
        if not signature_matches(unsigned, known.secret, signature):
            raise Unauthorized(NOT_VERIFIED)
        return known.caller

    async def lookup(self, api_key: str) -> Known:
        now = time.monotonic()
        known = self.known.get(api_key)
        if known is not None and now - known.fetched < self.ttl:
            return known
        pending = self.pending.get(api_key)
        if pending is None:  # a task of its own: a waiter that goes away does not end it
            pending = self.pending[api_key] = asyncio.ensure_future(self._fetch(api_key, now))
            pending.add_done_callback(lambda done: self._fetched(api_key, done))
        return await asyncio.shield(pending)

    def _fetched(self, api_key: str, done: asyncio.Future[Known]) -> None:
        del self.pending[api_key]
        if not done.cancelled():
            done.exception()  # retrieved: each waiter raises it; none left is no warning

    async def _fetch(self, api_key: str, now: float) -> Known:
        try:
            user = (await self.client.call("getUser", userapikey=api_key)).get("user") or {}
        except ApiRefused as exc:
            if "431" not in str(exc):
                raise
            user = {}
        if not user or user.get("state", "enabled").lower() != "enabled":
            known = Known(None, None, now)
        else:
            known = await self._known(user, now)
        if len(self.known) > 10_000:
            self.known.clear()
        self.known[api_key] = known
        return known

    async def _known(self, user: dict[str, Any], now: float) -> Known:
        keys = (await self.client.call("getUserKeys", id=user["id"])).get("userkeys") or {}
        domains = await self.client.call("listDomains", id=user["domainid"], listall="true")
        (domain,) = domains.get("domain") or [{"path": user.get("domain", "ROOT")}]
        scope = SCOPE_OF_ACCOUNT_TYPE.get(int(user.get("accounttype", 0)), "account")
        # a username is unique within its domain only: the rate limit and the access log
        # tell users by both
        via = f"cs:{domain['path']}/{user.get('username')}"
        caller = Caller(user["account"], domain["path"], scope, via)
        return Known(keys.get("secretkey"), caller, now)
