"""Bearer tokens of the HTTP API: made by ``csnotify token create``, shown once, kept
only as a hash (sha256 of the secret part) with the account, domain and scope they act
for. A token reads ``csn_<id>_<secret>``: the id finds the row, the secret is compared
with its hash in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from csnotify.errors import BadInput, NotFound

if TYPE_CHECKING:
    from csnotify.models import Subscription
    from csnotify.store import Store

SCOPES = ("account", "domain", "global")
_TOKEN = re.compile(r"^csn_(tok_[0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_DOMAIN = re.compile(r"^ROOT(/[^/\x00-\x1f]{1,255})*$")
_ACCOUNT = re.compile(r"^[^\x00-\x1f/]{1,255}$")


@dataclass(frozen=True)
class Caller:
    """Who an API request acts for: an account in a domain, with the reach of its scope
    (account: its own subscriptions; domain: those of the domain and its subdomains;
    global: every subscription, the CLI's included)."""

    account: str
    domain: str
    scope: str
    via: str  # token id, or the CloudStack API key's user

    def as_json(self) -> dict[str, str]:
        return {"account": self.account, "domain": self.domain, "scope": self.scope}

    def owner(self) -> tuple[str, str, str]:
        """(scope, account, domain) of what this caller subscribes."""
        return self.scope, self.account, self.domain

    def sees(self, sub: Subscription) -> bool:
        """Whether a subscription is in this caller's scope; one outside it is a 404."""
        if self.scope == "global":
            return True
        if sub.owner_scope is None or sub.owner_scope == "global" or sub.owner_domain is None:
            return False
        if self.scope == "domain":
            return sub.owner_domain == self.domain or sub.owner_domain.startswith(self.domain + "/")
        return (
            sub.owner_scope == "account"
            and sub.owner_account == self.account
            and sub.owner_domain == self.domain
        )


@dataclass
class Token:
    id: str
    account: str
    domain: str
    scope: str
    created: str
    expires: str | None
    revoked: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account": self.account,
            "domain": self.domain,
            "scope": self.scope,
            "created": self.created,
            "expires": self.expires,
            "revoked": self.revoked,
        }


def check_domain(domain: str) -> str:
    """A CloudStack domain path as listDomains gives it: ROOT, ROOT/sales, ..."""
    value = domain.strip().strip("/")
    if value.upper() == "ROOT" or value.upper().startswith("ROOT/"):
        value = "ROOT" + value[4:]
    elif value:
        value = f"ROOT/{value}"
    if not _DOMAIN.match(value) or any(part in ("", ".", "..") for part in value.split("/")):
        raise BadInput(f"--domain {domain!r}: give a domain path such as ROOT or ROOT/sales")
    return value


def check_account(account: str) -> str:
    if not _ACCOUNT.match(account.strip()):
        raise BadInput(f"--account {account!r}: give the CloudStack account name, e.g. admin")
    return account.strip()


def check_scope(scope: str) -> str:
    value = scope.strip().lower()
    if value not in SCOPES:
        raise BadInput(f"--scope {scope!r}: use one of {', '.join(SCOPES)}")
    return value


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(
    store: Store, account: str, domain: str, scope: str, expires: str | None
) -> tuple[Token, str]:
    """A new token; returns it and the bearer value (shown once, never stored)."""
    from datetime import UTC, datetime

    from csnotify.events import parse_duration, utc_iso

    token = Token(
        id=f"tok_{secrets.token_hex(6)}",
        account=check_account(account),
        domain=check_domain(domain),
        scope=check_scope(scope),
        created=utc_iso(datetime.now(UTC)),
        expires=None,
        revoked=None,
    )
    if expires is not None:
        lasts = parse_duration(expires, "--expires")
        if lasts.total_seconds() <= 0:
            raise BadInput(f"--expires {expires!r}: a token must last some time, e.g. 90d")
        token.expires = utc_iso(datetime.now(UTC) + lasts)
    secret = secrets.token_urlsafe(32)
    with store.transaction():
        store.insert_token(token.as_json() | {"digest": _digest(secret)})
    return token, f"csn_{token.id}_{secret}"


def listed(store: Store) -> list[Token]:
    return [Token(**row) for row in store.tokens()]


def revoke(store: Store, token_id: str) -> tuple[Token, bool]:
    """The token, revoked; and whether this call revoked it (False: it already was)."""
    from csnotify.clock import now_iso

    with store.transaction():
        found = {t["id"]: t for t in store.tokens()}
        if token_id not in found:
            raise NotFound(f"no token {token_id!r}; see 'csnotify token list'")
        now = found[token_id]["revoked"] is None
        if now:
            store.revoke_token(token_id, now_iso())
    return Token(**store.tokens(token_id)[0]), now


def authenticate(store: Store, bearer: str, now: str) -> Caller | None:
    """The caller a bearer token acts for; None for an unknown, wrong, revoked or expired
    token (the API answers all of them alike: 401)."""
    match = _TOKEN.match(bearer.strip())
    if match is None:
        return None
    token_id, secret = match.groups()
    rows = store.tokens(token_id, with_digest=True)
    if not rows:
        return None
    row = rows[0]
    if not hmac.compare_digest(row.pop("digest"), _digest(secret)):
        return None
    if row["revoked"] is not None or (row["expires"] is not None and row["expires"] <= now):
        return None
    return Caller(row["account"], row["domain"], row["scope"], token_id)
