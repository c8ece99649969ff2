"""The HTTP API: serve, and its bearer tokens (token create, token list, token revoke)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from csnotify.cli.common import JSON_OPT, AppState, CsnotifyGroup, app, render, state
from csnotify.errors import BadInput

if TYPE_CHECKING:
    from csnotify.store import Store


@app.command()
def serve(
    ctx: typer.Context,
    listen: str = typer.Option(
        "127.0.0.1:8787", "--listen", metavar="HOST:PORT", help="Address to serve the API on."
    ),
    tls_cert: Path | None = typer.Option(
        None, "--tls-cert", metavar="FILE", help="Serve HTTPS with this certificate (PEM)."
    ),
    tls_key: Path | None = typer.Option(
        None, "--tls-key", metavar="FILE", help="The certificate's private key (PEM)."
    ),
) -> None:
    """Serve the subscription commands as a JSON API under /v1 (OpenAPI 3.1 at
    /v1/openapi.json), and as CloudStack API commands at /client/api for cmk and other
    CloudStack clients (createSubscription, listSubscriptions, ...; listApis for 'cmk
    sync'), on the same store as the CLI. Callers send 'Authorization: Bearer TOKEN'
    (csnotify token create), or sign requests with their CloudStack API keys
    (signatureVersion 3; checked with the admin keys in cloudstack.api_key). A subscription
    made through the API belongs to the caller's account (or domain), gets only that
    scope's events, and may use only the endpoints api.allow_schemes and
    api.allow_networks allow. SIGTERM or SIGINT: requests in flight finish, then it exits 0.

    \b
    Examples:
      csnotify serve --listen 127.0.0.1:8787
      csnotify serve --listen 0.0.0.0:8443 --tls-cert api.pem --tls-key api.key
      cmk set url http://127.0.0.1:8787/client/api; cmk sync; cmk list subscriptions
    """
    import asyncio
    import contextlib
    import signal

    from csnotify import aio, logs
    from csnotify.api.server import serve as run_server

    app_state = state(ctx)
    host, port = api_address(listen, app_state)
    ssl_context = _tls(tls_cert, tls_key)
    settings = app_state.settings()
    store = app_state.store()
    logs.setup(app_state.terminal.stderr, app_state.verbose, app_state.quiet)
    ready = announcer(app_state, store)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        api = await run_server(store, settings, host, port, ready, stop, ssl_context)
        counts = ", ".join(f"{n} {k}" for k, n in sorted(api.counts.by_status.items()))
        app_state.say(f"stopped serving; answered {counts or 'no requests'}")

    aio.run(run())


def api_address(text: str, app_state: AppState, option: str = "--listen") -> tuple[str, int]:
    """Where to serve the API (serve --listen, listen --api); bad api.* settings are
    refused before anything listens."""
    from csnotify.config import parse_listen
    from csnotify.policy import Policy

    at = parse_listen(text, "127.0.0.1:8787 or [::1]:8787", option=option)
    Policy.from_settings(app_state.settings())
    return at


def announcer(app_state: AppState, store: Store) -> Callable[[str], None]:
    """What says, once the API listens, where (and on which store)."""

    def ready(url: str) -> None:
        app_state.terminal.err(f"csnotify: serving the API on {url}/v1 (store {store.location})")
        app_state.terminal.stderr.flush()

    return ready


def _tls(cert: Path | None, key: Path | None) -> object:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise BadInput("--tls-cert and --tls-key go together; give both")
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise BadInput(f"cannot use --tls-cert {cert} / --tls-key {key}: {exc}") from None
    return context


token_app = typer.Typer(
    cls=CsnotifyGroup,
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Bearer tokens for the HTTP API (token create, token list, token revoke).",
)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    account: str = typer.Option(..., "--account", metavar="NAME", help="CloudStack account."),
    domain: str = typer.Option(
        "ROOT", "--domain", metavar="PATH", help="The account's domain path, e.g. ROOT/sales."
    ),
    scope: str = typer.Option(
        "account",
        "--scope",
        metavar="account|domain|global",
        help="What the token reaches: the account's subscriptions, its domain's, or all.",
    ),
    expires: str | None = typer.Option(
        None,
        "--expires",
        metavar="DURATION",
        help="Valid this long (e.g. 30d); default: until revoked.",
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Make a bearer token for the API and print it once; the store keeps only its hash.

    \b
    Examples:
      csnotify token create --account acme --domain ROOT/customers --expires 90d
      csnotify token create --account admin --scope global
    """
    from csnotify import tokens

    app_state = state(ctx)
    token, bearer = tokens.create(app_state.store(), account, domain, scope, expires)
    render(app_state, token.as_json() | {"token": bearer}, as_json, _created_token_text)


def _created_token_text(app_state: AppState, made: dict[str, Any]) -> None:
    app_state.say(
        f"created token {made['id']} for {made['scope']} {made['domain']}/{made['account']}"
        + (f", expires {made['expires']}" if made["expires"] else "")
    )
    app_state.terminal.out(f"token (shown once, keep it): {made['token']}")


@token_app.command("list")
def token_list(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """List the API's tokens (never their secrets).

    \b
    Example:
      csnotify token list
    """
    from csnotify import tokens

    app_state = state(ctx)
    found = tokens.listed(app_state.store())
    render(app_state, [t.as_json() for t in found], as_json, _tokens_text)


def _tokens_text(app_state: AppState, found: list[dict[str, Any]]) -> None:
    if not found:
        app_state.terminal.err("no tokens yet; create one with 'csnotify token create'")
        return
    rows = [
        [t["id"], t["scope"], t["domain"], t["account"], t["created"], t["expires"] or "never",
         "revoked " + t["revoked"] if t["revoked"] else "valid"]
        for t in found
    ]  # fmt: skip
    app_state.terminal.table(
        ["ID", "SCOPE", "DOMAIN", "ACCOUNT", "CREATED", "EXPIRES", "STATE"], rows
    )


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    token_id: str = typer.Argument(..., metavar="ID", help="The token's id (token list)."),
) -> None:
    """Revoke a token: the API refuses it from the next request on.

    \b
    Example:
      csnotify token revoke tok_3f9a0c1b2d4e
    """
    from csnotify import tokens

    app_state = state(ctx)
    token, now = tokens.revoke(app_state.store(), token_id)
    owner = f"{token.scope} {token.domain}/{token.account}"
    if now:
        app_state.say(f"revoked token {token.id} ({owner})")
    else:
        app_state.say(f"token {token.id} ({owner}) was already revoked at {token.revoked}")
