"""Caller authentication of the development AS (development/test fixture, NOT for production):
OAuth client authentication (HTTP Basic or form `client_id`/`client_secret`) and the
protection-API identity carried by a PAT (`Authorization: Bearer`), with each dialect's
error answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devas.httpcore import Request
from devas.store import UMA_PROTECTION, Client, TokenRecord, now

if TYPE_CHECKING:
    from devas.server import App


def authenticate_client(app: "App", req: Request) -> Client:
    """Basic credentials win over form fields (a Bearer header is no client authentication:
    Keycloak refuses a PAT at its introspection endpoint this way)."""
    basic = req.basic_credentials()
    client_id, secret = basic if basic else (req.form1("client_id"), req.form1("client_secret"))
    challenge = {"WWW-Authenticate": f'Basic realm="{app.dialect.realm}"'} if basic else None
    if not client_id:
        raise app.dialect.error(401, "invalid_client", "Client authentication required.")
    client = app.store.authenticate_client(client_id, secret)
    if client is None:
        raise app.dialect.error(401, "invalid_client", "Invalid client or Invalid client credentials",
                                headers=challenge)
    return client


def protection_identity(app: "App", req: Request, *, require_scope: bool = True) -> TokenRecord:
    """The record of a live PAT (or, Keycloak-like, any live access token of a client) on the
    request; `require_scope` demands `uma_protection` on it."""
    dialect = app.dialect
    token = req.bearer()
    if token is None:
        raise dialect.protection_missing_token()
    rec = app.tokens.resolve(token)
    if rec is None or rec.kind not in ("pat", "user") or not rec.live(now()):
        raise dialect.protection_bad_token()
    if require_scope and UMA_PROTECTION not in rec.scopes:
        raise dialect.protection_scope_missing()
    return rec
